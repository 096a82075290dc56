"""A real `dagster-daemon run`: the source-change sensor sees a MariaDB table change and its run succeeds."""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType

from osiris_dagster.instance_storage import ensure_storage
from osiris_dagster.project import ProjectLayout
from osiris_dagster.session.reader import SessionRecord
from tests.automation.helpers import extend_pipeline
from tests.conftest import run_cli, running_daemon

DEADLINE_SECONDS = 150


def wait_for(what: str, probe, log: Path, process: subprocess.Popen, timeout: float = DEADLINE_SECONDS):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        assert process.poll() is None, f"daemon exited while waiting for {what}:\n{log.read_text()[-4000:]}"
        time.sleep(1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{log.read_text()[-4000:]}")


def sensor_cursor(instance: dg.DagsterInstance) -> str | None:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == "movies_to_csv_source_change" and state.instigator_data is not None:
            return getattr(state.instigator_data, "cursor", None)
    return None


@pytest.mark.e2e
@pytest.mark.mariadb
def test_daemon_sensor_sees_a_mariadb_change_and_its_run_succeeds(
    project: Path, clean_env: dict[str, str], mariadb_database: str, mariadb_connect
) -> None:  # type: ignore[no-untyped-def]
    url = f"mysql+pymysql://root@127.0.0.1:3306/{mariadb_database}"
    loaded = run_cli(["demo", "load-mysql", "--url", url], cwd=project, env=clean_env)
    assert loaded.returncode == 0, loaded.stderr
    extend_pipeline(project, sensor={"source_change": {"minimum_interval_seconds": 1}})
    home = Path(clean_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # The daemon and this test open the fresh home at once: create its storage first, as
    # `osiris-dagster ui` and `run` do, or they race in alembic's migrations.
    ensure_storage(home)
    env = {
        **clean_env,
        "OSIRIS_PROJECT_DIR": str(project),
        "OSIRIS_PARAM_MOVIES_DB": "mysql.movies",
        "MYSQL_DATABASE": mariadb_database,
    }
    with running_daemon(project, env) as (process, log), dg.DagsterInstance.from_config(str(home)) as instance:
        baseline = wait_for("the sensor's baseline", lambda: sensor_cursor(instance), log, process)
        assert "extract-actors" in baseline
        assert not instance.get_runs(), "the baseline must not request runs"

        connection = mariadb_connect(mariadb_database)
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO actors (id, name) VALUES (9001, 'Sensor Seen')")
        connection.close()

        def finished_run():  # type: ignore[no-untyped-def]
            runs = instance.get_runs()
            return runs[0] if runs and runs[0].is_finished else None

        run = wait_for("the requested run to finish", finished_run, log, process)
        assert run.status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-4000:]
        assert run.tags["osiris/changed_steps"] == "extract-actors"
        assert set(run.asset_selection or []) == {
            dg.AssetKey(["movies_to_csv", "extract_actors"]),
            dg.AssetKey(["movies_to_csv", "write_actors_csv"]),
        }
        assert len(instance.get_runs()) == 1
    with (project / "output" / "actors.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert {"id": "9001", "name": "Sensor Seen"}.items() <= rows[-1].items()
    assert sorted(p.name for p in (project / "output").iterdir()) == ["actors.csv"]
    # A sensor's run is a first-class run: the project's executor and a complete session directory.
    record = SessionRecord.read(ProjectLayout(project).session_dir(run.run_id))
    names = [line["event"] for line in record.events]
    assert names[0] == "run_start" and names[-1] == "run_end", names
    assert record.events[0]["executor"] == "in_process"
    status = record.status or {}
    assert status["ok"] is True and status["pipeline"] == "movies-to-csv"
    assert status["steps_total"] == status["steps_completed"] == 2
