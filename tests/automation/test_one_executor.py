"""One executor for every run of the code location: pipeline jobs and Dagster's implicit asset job
(UI Materialize, selections across pipelines, backfills, `dagster asset materialize`) alike run on
the project's recording executor, and every such run leaves a complete session directory.

The executor is checked where a user can see it, in Dagster's own event log of a real instance:
the in-process executor announces "Executing steps in process (pid: N)" and every step starts in
that process; the multiprocess executor (per run config) starts each step in a process of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from osiris_dagster.cli import cli
from osiris_dagster.components.sensors import run_alert_sensor
from osiris_dagster.project import ProjectLayout
from osiris_dagster.session.catalogue import validator
from osiris_dagster.session.reader import SessionRecord
from tests.automation.helpers import repository, write_pipeline

IMPLICIT_ASSET_JOB = "__ASSET_JOB"
MULTIPROCESS = {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}


def actors_pipeline(name: str, query: str = "SELECT * FROM actors ORDER BY id") -> dict:
    """A second, two-step pipeline, so that a selection can span two pipelines."""
    return {
        "oml_version": "0.1.0",
        "name": name,
        "steps": [
            {
                "id": "extract",
                "component": "sql.extractor",
                "mode": "read",
                "config": {"connection": "@sqlite.movies", "query": query},
            },
            {
                "id": "write",
                "component": "filesystem.csv_writer",
                "mode": "write",
                "needs": ["extract"],
                "config": {"path": f"output/{name}.csv"},
            },
        ],
    }


def materialize(project: Path, env: dict[str, str], select: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`dagster asset materialize`: the CLI path onto the implicit asset job, in a real instance."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    return subprocess.run(
        [dagster, "asset", "materialize", "-m", "osiris_dagster.definitions", "--select", select, *extra],
        cwd=project,
        env={**env, "OSIRIS_PROJECT_DIR": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def instance_home(clean_env: dict[str, str]) -> Path:
    home = Path(clean_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def only_run(home: Path) -> dg.DagsterRun:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        return run


def step_processes(home: Path, run_id: str) -> tuple[list[str], dict[str, int]]:
    """Engine messages of the run, and the pid each step started in, from Dagster's event log."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        entries = instance.all_logs(run_id)
    engine = [e.dagster_event.message or "" for e in entries if e.dagster_event and e.dagster_event.is_engine_event]
    starts = {
        e.dagster_event.step_key: e.dagster_event.pid
        for e in entries
        if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START
    }
    return engine, starts


def complete_session(project: Path, run_id: str) -> SessionRecord:
    record = SessionRecord.read(ProjectLayout(project).session_dir(run_id))
    names = [line["event"] for line in record.events if line["event"] != "run_alert"]  # the sensor's, later
    assert names[0] == "run_start" and names[-1] == "run_end", names
    assert record.status is not None, "no status.json"
    validator("status").validate(record.status)
    for line in record.events:
        validator("events").validate(line)
    return record


def test_every_job_of_the_code_location_runs_on_the_project_executor(project: Path) -> None:
    """Pipeline jobs, their schedules' and sensors' targets, and the implicit asset job behind
    Materialize, asset backfills and `dagster asset materialize` all carry one executor."""
    write_pipeline(project, "actors_only", actors_pipeline("actors-only"))
    repo = repository(project)
    jobs = {job.name: job for job in repo.get_all_jobs()}
    assert {"movies_to_csv", "movies_to_supabase", "actors_only", IMPLICIT_ASSET_JOB} <= set(jobs)
    assert {job.executor_def.name for job in jobs.values()} == {"osiris"}
    every_asset = repo.get_implicit_job_def_for_assets(list(repo.asset_graph.get_all_asset_keys()))
    assert every_asset is not None and every_asset.executor_def.name == "osiris"


@pytest.mark.e2e
def test_a_selection_across_pipelines_runs_in_process_and_leaves_a_complete_session(
    project: Path, clean_env: dict[str, str], instance_home: Path
) -> None:
    write_pipeline(project, "actors_only", actors_pipeline("actors-only"))
    result = materialize(project, clean_env, "group:movies_to_csv,group:actors_only")
    assert result.returncode == 0, result.stderr[-3000:]

    run = only_run(instance_home)
    assert run.job_name == IMPLICIT_ASSET_JOB
    engine, starts = step_processes(instance_home, run.run_id)
    (announce,) = [message for message in engine if message.startswith("Executing steps in process (pid: ")]
    pid = int(announce.rsplit(" ", 1)[1].rstrip(")"))
    assert len(starts) == 12 and set(starts.values()) == {pid}, starts
    assert not [message for message in engine if "subprocess" in message.lower()]

    record = complete_session(project, run.run_id)
    status = record.status or {}
    assert status["ok"] is True and status["job"] == IMPLICIT_ASSET_JOB
    assert status["pipelines"] == ["actors-only", "movies-to-csv"]
    assert status["pipeline"] == "actors-only+movies-to-csv"
    assert status["steps_total"] == status["steps_completed"] == 12
    (start,) = [line for line in record.events if line["event"] == "run_start"]
    assert start["executor"] == "in_process" and start["job"] == IMPLICIT_ASSET_JOB
    assert (project / "output" / "actors-only.csv").read_bytes() == (project / "output" / "actors.csv").read_bytes()
    listed = CliRunner().invoke(cli, ["--project-dir", str(project), "logs", "list"])
    assert listed.exit_code == 0 and f"run_{run.run_id}\tactors-only+movies-to-csv\tok\tlocal" in listed.output


@pytest.mark.e2e
def test_the_implicit_asset_job_takes_the_multiprocess_executor_from_run_config(
    project: Path, clean_env: dict[str, str], instance_home: Path
) -> None:
    select = "movies_to_csv/extract_actors,movies_to_csv/write_actors_csv"
    result = materialize(project, clean_env, select, "--config-json", json.dumps(MULTIPROCESS))
    assert result.returncode == 0, result.stderr[-3000:]

    run = only_run(instance_home)
    engine, starts = step_processes(instance_home, run.run_id)
    (announce,) = [message for message in engine if message.startswith("Executing steps using multiprocess")]
    parent = int(announce.rsplit(" ", 1)[1].rstrip(")"))
    assert len(starts) == 2 and parent not in starts.values() and len(set(starts.values())) == 2, starts

    record = complete_session(project, run.run_id)
    (start,) = [line for line in record.events if line["event"] == "run_start"]
    assert start["executor"] == "multiprocess"
    assert (record.status or {})["ok"] is True and (record.status or {})["pipeline"] == "movies-to-csv"


@pytest.mark.e2e
def test_a_failed_materialize_of_the_implicit_asset_job_raises_the_run_alert(
    project: Path, clean_env: dict[str, str], instance_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run-failure sensor, evaluated by Dagster's own tick logic on the real instance, alerts
    on an `__ASSET_JOB` run (it used to key on the pipeline job's tag and miss it)."""
    monkeypatch.setenv("OSIRIS_PROJECT_DIR", str(project))
    write_pipeline(project, "ghosts", actors_pipeline("ghosts", query="SELECT * FROM ghosts"))

    with dg.DagsterInstance.from_config(str(instance_home)) as instance:
        baseline = run_alert_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert baseline.cursor  # the sensor starts from "now", as under the daemon

        result = materialize(project, clean_env, "group:ghosts")
        assert result.returncode != 0

        (run,) = instance.get_runs()
        assert run.job_name == IMPLICIT_ASSET_JOB and not run.tags.get("osiris/pipeline")
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        run_alert_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=baseline.cursor))

    record = complete_session(project, run.run_id)
    assert (record.status or {})["ok"] is False and (record.status or {})["pipeline"] == "ghosts"
    (alert,) = [line for line in record.events if line["event"] == "run_alert"]
    assert alert["job"] == IMPLICIT_ASSET_JOB and alert["step_id"] == "extract"
    assert "ghosts" in alert["error"]
