"""The demo pipeline end to end through `dagster job execute`, on SQLite and on real MariaDB."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from tests.conftest import dagster_bin, run_cli
from tests.e2e.demo_expectations import DEMO_TABLES, assert_csv_matches, assert_session_valid

JOB = "movies_to_csv"
STEPS = 10


def execute_demo_job(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dagster_bin(), "job", "execute", "-m", "osiris_dagster.definitions", "-j", JOB],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def only_session(project: Path) -> Path:
    sessions = list((project / "logs").glob("run_*"))
    assert len(sessions) == 1, sessions
    return sessions[0]


def assert_materialized(home: str, run_id: str) -> None:
    with DagsterInstance.from_config(home) as instance:
        for table in DEMO_TABLES:
            extracted = instance.get_latest_materialization_event(AssetKey([JOB, f"extract_{table}"]))
            written = instance.get_latest_materialization_event(AssetKey([JOB, f"write_{table}_csv"]))
            assert extracted is not None and written is not None, table
            assert extracted.run_id == run_id == written.run_id
            meta = extracted.asset_materialization.metadata
            rows = meta["rows_read"].value
            assert rows > 0 and meta["dagster/row_count"].value == rows
            assert meta["dagster/column_schema"].value.columns[0].name in {"id", "movie_id"}
            # Each run stages its own file, named by its run id (run isolation).
            assert meta["path"].value == f".osiris/staging/{JOB}/extract-{table.replace('_', '-')}/{run_id}.arrow"
            assert meta["bytes"].value > 0
            out = written.asset_materialization.metadata
            assert out["rows_written"].value == rows == out["dagster/row_count"].value
            assert out["path"].value == f"output/{table}.csv"
            assert out["bytes"].value > 0
            assert f"- `logs/run_{run_id}/artifacts/write-{table.replace('_', '-')}-csv/cleaned_config.json`" in (
                out["artifacts"].value.splitlines()
            )
            check = AssetCheckKey(AssetKey([JOB, f"write_{table}_csv"]), "row_count_matches_extract")
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])[check]
            assert record.run_id == run_id
            assert record.event.dagster_event.event_specific_data.passed is True


@pytest.mark.e2e
def test_demo_job_on_embedded_sqlite_writes_exact_csvs_metadata_and_session(
    project: Path, clean_env: dict[str, str]
) -> None:
    result = execute_demo_job(project, clean_env)
    assert result.returncode == 0, result.stderr[-3000:]
    session = only_session(project)
    status = assert_session_valid(session, steps=STEPS)
    assert status["ok"] is True and status["steps_completed"] == STEPS and status["sandbox_id"] == "local"

    source = sqlite3.connect(project / ".osiris" / "demo" / "movies.sqlite")
    total = 0
    for table, query in DEMO_TABLES.items():
        cursor = source.execute(query)
        columns = [d[0] for d in cursor.description]
        total += assert_csv_matches(project / "output" / f"{table}.csv", table, columns, cursor.fetchall())
    metrics = [json.loads(line) for line in (session / "metrics.jsonl").read_text().splitlines()]
    assert sum(m["value"] for m in metrics if m["metric"] == "rows_read") == total
    assert sum(m["value"] for m in metrics if m["metric"] == "rows_written") == total
    assert_materialized(clean_env["DAGSTER_HOME"], status["run_id"])


@pytest.mark.e2e
@pytest.mark.mariadb
def test_same_pipeline_runs_on_mariadb_by_configuration_only(
    project: Path, clean_env: dict[str, str], mariadb_database: str, mariadb_connect
) -> None:
    load = run_cli(
        ["demo", "load-mysql", "--url", f"mysql+pymysql://root@127.0.0.1:3306/{mariadb_database}"],
        cwd=project,
        env=clean_env,
    )
    assert load.returncode == 0, load.stderr
    env = {**clean_env, "OSIRIS_PARAM_MOVIES_DB": "mysql.movies", "MYSQL_DATABASE": mariadb_database}
    result = execute_demo_job(project, env)
    assert result.returncode == 0, result.stderr[-3000:]
    status = assert_session_valid(only_session(project), steps=STEPS)
    assert status["ok"] is True
    assert not (project / ".osiris" / "demo").exists(), "the SQLite demo must not be touched"

    connection = mariadb_connect(mariadb_database)
    with connection.cursor() as cursor:
        for table, query in DEMO_TABLES.items():
            cursor.execute(query)
            columns = [d[0] for d in cursor.description]
            assert_csv_matches(project / "output" / f"{table}.csv", table, columns, cursor.fetchall())
    connection.close()
    assert_materialized(clean_env["DAGSTER_HOME"], status["run_id"])
