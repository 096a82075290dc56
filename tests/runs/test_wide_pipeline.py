"""A 300-table pipeline (600 steps) on SQLite validates and runs to success, every CSV exact.

Timing is measured by bench/scale.py (ratios against a baseline in the same invocation), not
asserted here: the machines running the suite are shared.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from bench.scale import make_project
from tests.conftest import run_cli

STEPS = 600


@pytest.mark.e2e
def test_a_600_step_pipeline_validates_and_runs_to_success(tmp_path: Path, clean_env: dict[str, str]) -> None:
    project = tmp_path / "wide"
    make_project(project, STEPS)
    env = {**clean_env, "OSIRIS_PROJECT_DIR": str(project)}
    validated = run_cli(["validate", "wide"], cwd=project, env=env)
    assert validated.returncode == 0, validated.stderr
    assert f"{STEPS} steps" in validated.stdout

    result = run_cli(["run", "wide"], cwd=project, env=env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    (session,) = (project / "logs").glob("run_*")
    status = json.loads((session / "status.json").read_text())
    assert status["ok"] is True and status["steps_completed"] == status["steps_total"] == STEPS
    with sqlite3.connect(project / "shop.db") as db:
        for i in range(STEPS // 2):
            rows = db.execute(f"SELECT id, name, v FROM t{i} ORDER BY id").fetchall()
            with (project / "output" / f"t{i}.csv").open(newline="", encoding="utf-8") as handle:
                parsed = list(csv.reader(handle))
            assert parsed[0] == ["id", "name", "v"]
            assert parsed[1:] == [[str(a), b, repr(c)] for a, b, c in rows], f"t{i}.csv"
