"""Concurrent runs of one pipeline never mix data; each checks its rows against its own extraction.

Eight `osiris-dagster run` processes start together on a *fresh* Dagster home (so this is also
the storage-initialisation race: every one of them creates or waits for the storage): five with
different `--param grp=...` values (a query filtered by the group, a CSV named after it) and
three more repeating groups already running (the same CSV path written by overlapping runs).
Every CSV is compared row by row with the source, read with sqlite3 in this test; every run's
row-count check must have compared with the rows *that* run extracted.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import yaml

GROUPS = ["north", "south", "east", "west", "centre"]
RUNS = [*GROUPS, "north", "east", "centre"]  # the last three overlap runs with the same params
PIPELINE = {
    "oml_version": "0.1.0",
    "name": "regions",
    "params": {"grp": "north"},
    "steps": [
        {
            "id": "extract-items",
            "component": "sql.extractor",
            "mode": "read",
            "config": {
                "connection": "@sqlite.shop",
                "query": "SELECT id, grp, label, amount FROM items WHERE grp = '${params.grp}' ORDER BY id",
            },
        },
        {
            "id": "write-items-csv",
            "component": "filesystem.csv_writer",
            "mode": "write",
            "needs": ["extract-items"],
            "config": {"path": "output/items_${params.grp}.csv"},
        },
    ],
}


def make_project(project: Path) -> None:
    for pipeline in (project / "assets").glob("*.yaml"):
        pipeline.unlink()
    (project / "assets" / "regions.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (project / "resources" / "connections.yaml").write_text("connections:\n  sqlite:\n    shop: {path: shop.db}\n")
    with sqlite3.connect(project / "shop.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, grp TEXT, label TEXT, amount INTEGER)")
        # Different sizes per group, so a run that read another group's table is caught by its count too.
        rows = [
            (i, grp, f'{grp} item {i}, "quoted" é', i * 7 if i % 5 else None)
            for n, grp in enumerate(GROUPS)
            for i in range(n * 100_000 + 1, n * 100_000 + 1 + 3_000 + 1_000 * n)
        ]
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", rows)


def source_rows(project: Path, grp: str) -> list[list[str]]:
    with sqlite3.connect(project / "shop.db") as db:
        rows = db.execute("SELECT id, grp, label, amount FROM items WHERE grp = ? ORDER BY id", (grp,)).fetchall()
    return [["" if v is None else str(v) for v in row] for row in rows]


def test_eight_concurrent_runs_on_a_fresh_home_never_mix_data(project: Path, clean_env: dict[str, str]) -> None:
    make_project(project)
    home = Path(clean_env["DAGSTER_HOME"])
    assert not any(home.iterdir()), "the home must be fresh: this is also the storage-creation race"
    env = {**clean_env, "OSIRIS_PROJECT_DIR": str(project)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "osiris_dagster.cli", "run", "regions", "--param", f"grp={grp}"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for grp in RUNS
    ]
    deadline = time.monotonic() + 400
    outputs = [p.communicate(timeout=max(1, deadline - time.monotonic())) for p in processes]
    for grp, process, (out, err) in zip(RUNS, processes, outputs, strict=True):
        assert process.returncode == 0, f"run grp={grp} failed:\n{out}\n{err[-3000:]}"

    for grp in GROUPS:
        with (project / "output" / f"items_{grp}.csv").open(newline="", encoding="utf-8") as handle:
            parsed = list(csv.reader(handle))
        assert parsed[0] == ["id", "grp", "label", "amount"]
        expected = source_rows(project, grp)
        assert len(parsed) - 1 == len(expected), f"items_{grp}.csv has {len(parsed) - 1} rows, source {len(expected)}"
        for number, (got, want) in enumerate(zip(parsed[1:], expected, strict=True), start=1):
            assert got == want, f"items_{grp}.csv row {number}: {got} != {want}"

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == len(RUNS) and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        for run in runs:
            events = [
                json.loads(line)
                for line in (project / "logs" / f"run_{run.run_id}" / "events.jsonl").read_text().splitlines()
            ]
            config = json.loads(
                (
                    project / "logs" / f"run_{run.run_id}" / "artifacts" / "write-items-csv" / "cleaned_config.json"
                ).read_text()
            )
            run_grp = config["config"]["path"].removeprefix("output/items_").removesuffix(".csv")
            (check,) = [e for e in events if e["event"] == "check_evaluated"]
            rows_of_group = len(source_rows(project, run_grp))
            # The check compared with THIS run's extraction: its group's row count, and it passed.
            assert check["passed"] is True and check["expected"] == check["actual"] == rows_of_group, (run_grp, check)
            records = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
            extracted = [
                r.event_log_entry.asset_materialization
                for r in records
                if r.event_log_entry.asset_materialization.asset_key == dg.AssetKey(["regions", "extract_items"])
            ]
            (materialization,) = extracted
            # Its own staged file, named by its run id, recorded on its materialization.
            assert materialization.metadata["path"].value == f".osiris/staging/regions/extract-items/{run.run_id}.arrow"
            assert materialization.metadata["rows_read"].value == rows_of_group

    # Retention: after the last run ended, only the latest extraction's staged file is left, and no scratch.
    staged = sorted(p.name for p in (project / ".osiris" / "staging" / "regions" / "extract-items").iterdir())
    latest = None
    with dg.DagsterInstance.from_config(str(home)) as instance:
        latest = instance.get_latest_materialization_event(dg.AssetKey(["regions", "extract_items"]))
    assert latest is not None and f"{latest.run_id}.arrow" in staged, staged
    assert len(staged) < len(RUNS), f"superseded staged files were not pruned: {staged}"
    assert all(not name.startswith(".") for name in staged), staged
    assert not [p for p in (project / "output").iterdir() if p.name.startswith(".")]
    assert not list((project / ".osiris" / "runs").glob("*.json")), "every owner record released"
