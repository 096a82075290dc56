"""A run killed with a real `kill -9` mid-write: the target stays intact, the run is marked failed
with a status.json saying it was abandoned, and its temp files go — at the latest when the next
run start, `osiris-dagster logs list` or the daemon's sensor looks. A live run is never touched."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from osiris_dagster.instance_storage import ensure_storage
from tests.conftest import run_cli, running_daemon

ROWS = 400_000
PIPELINE = {
    "oml_version": "0.1.0",
    "name": "big",
    "params": {"limit": "1000"},
    "steps": [
        {
            "id": "extract-big",
            "component": "sql.extractor",
            "mode": "read",
            "config": {
                "connection": "@sqlite.shop",
                "query": "SELECT * FROM big WHERE id <= ${params.limit} ORDER BY id",
            },
        },
        {
            "id": "write-big-csv",
            "component": "filesystem.csv_writer",
            "mode": "write",
            "needs": ["extract-big"],
            "config": {"path": "output/big.csv"},
        },
    ],
}


@pytest.fixture
def big(project: Path, clean_env: dict[str, str]) -> Path:
    for pipeline in (project / "assets").glob("*.yaml"):
        pipeline.unlink()
    (project / "assets" / "big.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (project / "resources" / "connections.yaml").write_text("connections:\n  sqlite:\n    shop: {path: shop.db}\n")
    with sqlite3.connect(project / "shop.db") as db:
        db.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, label TEXT, amount REAL, note TEXT)")
        db.executemany(
            "INSERT INTO big VALUES (?, ?, ?, ?)",
            ((i, f'row {i}, with a comma and "quotes" ü', i + 0.25, "x" * (i % 90)) for i in range(1, ROWS + 1)),
        )
    return project


def env_of(project: Path, clean_env: dict[str, str]) -> dict[str, str]:
    return {**clean_env, "OSIRIS_PROJECT_DIR": str(project)}


def expected_rows(project: Path, limit: int) -> list[list[str]]:
    with sqlite3.connect(project / "shop.db") as db:
        rows = db.execute("SELECT id, label, amount, note FROM big WHERE id <= ? ORDER BY id", (limit,)).fetchall()
    return [[str(i), label, repr(amount), note] for i, label, amount, note in rows]


def assert_target_holds_first_run(project: Path) -> None:
    with (project / "output" / "big.csv").open(newline="", encoding="utf-8") as handle:
        parsed = list(csv.reader(handle))
    assert parsed[0] == ["id", "label", "amount", "note"]
    assert parsed[1:] == expected_rows(project, 1000), "the target CSV is not the last successful run's"


def scratch_files(project: Path) -> list[Path]:
    hidden = [p for p in (project / "output").glob(".*") if p.is_file()]
    return hidden + [p for p in (project / ".osiris" / "staging").rglob(".*") if p.is_file()]


def start_big_run(project: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "osiris_dagster.cli", "run", "big", "--param", f"limit={ROWS}"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_scratch(project: Path, where: str, process: subprocess.Popen[bytes]) -> tuple[Path, str]:
    """The first scratch file of the running run in `where` ("output" or "staging"), and its run id.

    A run's CSV scratch file appears while its table is still being extracted (the CSV is
    prepared alongside, targets/csv_prepared.py) and stays until the write step renames it.
    """
    folder = project / "output" if where == "output" else project / ".osiris" / "staging" / "big" / "extract-big"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed mid-write (table too small?)"
        found = [p for p in folder.glob(".*osiris-*") if p.is_file()] if folder.is_dir() else []
        if found:
            (owner,) = list((project / ".osiris" / "runs").glob("*.json"))
            return found[0], owner.stem
        time.sleep(0.01)
    pytest.fail(f"no scratch file appeared in {folder}")


def kill_9(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def run_status(home: str, run_id: str) -> dg.DagsterRunStatus:
    with dg.DagsterInstance.from_config(home) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        return run.status


def assert_abandoned(project: Path, home: str, run_id: str) -> None:
    assert run_status(home, run_id) == dg.DagsterRunStatus.FAILURE
    status = json.loads((project / "logs" / f"run_{run_id}" / "status.json").read_text())
    assert status["ok"] is False and status["exit_code"] == 1
    assert status["reason"].startswith("abandoned: the run's process"), status["reason"]
    assert status["pipeline"] == "big" and status["steps_total"] == 2
    session = project / "logs" / f"run_{run_id}"
    events = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "run_start" and events[0]["pid"] > 0 and events[0]["host"]
    (end,) = [e for e in events if e["event"] == "run_end"]  # (a run_alert from the failure sensor may follow)
    assert end["ok"] is False and end["error"].startswith("abandoned")
    assert not (project / ".osiris" / "runs" / f"{run_id}.json").exists()


def logs_list(project: Path, env: dict[str, str]) -> dict[str, str]:
    result = run_cli(["logs", "list"], cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert "running?" not in result.stdout
    return {line.split("\t")[0].removeprefix("run_"): line.split("\t")[2] for line in result.stdout.splitlines()}


def wait_for_daemon_to_mark_failed(project: Path, env: dict[str, str], home: str, run_id: str) -> None:
    ensure_storage(Path(home))
    with running_daemon(project, env) as (daemon, log):
        deadline = time.monotonic() + 180
        while run_status(home, run_id) != dg.DagsterRunStatus.FAILURE:
            assert daemon.poll() is None, f"the daemon exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the daemon did not mark the run failed:\n{log.read_text()[-3000:]}"
            time.sleep(1)


@pytest.mark.e2e
def test_killed_runs_are_marked_failed_and_their_debris_reclaimed(big: Path, clean_env: dict[str, str]) -> None:
    project, env, home = big, env_of(big, clean_env), clean_env["DAGSTER_HOME"]
    first = run_cli(["run", "big"], cwd=project, env=env)
    assert first.returncode == 0, first.stderr
    assert_target_holds_first_run(project)

    # 1. Killed mid-write of the CSV; a real `dagster-daemon` (its osiris_abandoned_runs sensor) looks.
    process = start_big_run(project, env)
    temp, killed_in_write = wait_for_scratch(project, "output", process)
    os.kill(process.pid, signal.SIGSTOP)  # frozen mid-write, still alive: nobody may touch its files
    try:
        assert logs_list(project, env)[killed_in_write] == "running"
        assert temp.exists()
        assert run_status(home, killed_in_write) == dg.DagsterRunStatus.STARTED
    finally:
        kill_9(process)
    assert temp.exists() and f".osiris-{killed_in_write}." in temp.name
    assert run_status(home, killed_in_write) == dg.DagsterRunStatus.STARTED  # nobody has looked yet
    assert not (project / "logs" / f"run_{killed_in_write}" / "status.json").exists()
    assert_target_holds_first_run(project)
    wait_for_daemon_to_mark_failed(project, env, home, killed_in_write)
    assert_abandoned(project, home, killed_in_write)
    assert not temp.exists() and not scratch_files(project)

    # 2. Killed mid-extraction (a staging temp file); `logs list` looks.
    process = start_big_run(project, env)
    staging_temp, killed_in_extract = wait_for_scratch(project, "staging", process)
    kill_9(process)
    assert staging_temp.exists()
    outcomes = logs_list(project, env)
    assert outcomes[killed_in_extract] == "abandoned" and outcomes[killed_in_write] == "abandoned"
    assert_abandoned(project, home, killed_in_extract)
    assert not scratch_files(project)

    # 3. Killed mid-write again; the next run start looks (and that run succeeds).
    process = start_big_run(project, env)
    temp, killed_again = wait_for_scratch(project, "output", process)
    kill_9(process)
    assert temp.exists()
    assert_target_holds_first_run(project)
    again = run_cli(["run", "big"], cwd=project, env=env)
    assert again.returncode == 0, again.stderr
    assert_abandoned(project, home, killed_again)
    assert not scratch_files(project)
    assert_target_holds_first_run(project)
    outcomes = logs_list(project, env)
    assert sorted(outcomes.values()) == ["abandoned", "abandoned", "abandoned", "ok", "ok"], outcomes
