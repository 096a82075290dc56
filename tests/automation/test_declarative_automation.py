"""`automation:` in OML becomes Dagster's AutomationCondition, and a real daemon acts on it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from osiris_dagster.errors import PipelineSpecError
from osiris_dagster.spec.loader import load_pipeline
from tests.automation.helpers import DEMO_PIPELINE, extend_pipeline, repository
from tests.automation.test_daemon import wait_for
from tests.conftest import run_cli, running_daemon
from tests.e2e.demo_expectations import DEMO_TABLES, assert_session_valid
from tests.e2e.test_installed_wheel import assert_csv_has_the_source_rows

AUTOMATION_SENSOR = "movies_to_csv_automation"


def condition_label(repo: dg.RepositoryDefinition, *path: str) -> str | None:
    condition = repo.asset_graph.get(dg.AssetKey(list(path))).automation_condition
    return None if condition is None else condition.get_snapshot().node_snapshot.label


def test_pipeline_and_step_automation_become_conditions_that_ignore_the_source_tables(project: Path) -> None:
    path = extend_pipeline(project, automation={"on_cron": "0 6 * * 1-5", "timezone": "Europe/Prague"})
    text = path.read_text().replace("- id: write-actors-csv\n", "- id: write-actors-csv\n  automation: eager\n")
    path.write_text(text.replace("- id: extract-movies\n", "- id: extract-movies\n  automation: on_missing\n"))
    repo = repository(project)

    assert condition_label(repo, "movies_to_csv", "extract_actors") == "on_cron(0 6 * * 1-5, Europe/Prague)"
    assert condition_label(repo, "movies_to_csv", "write_reviews_csv") == "on_cron(0 6 * * 1-5, Europe/Prague)"
    assert condition_label(repo, "movies_to_csv", "write_actors_csv") == "eager"
    assert condition_label(repo, "movies_to_csv", "extract_movies") == "on_missing"
    assert condition_label(repo, "movies_to_csv", "source", "actors") is None
    # The external source table must not hold the extract back: it is in the condition's ignore list.
    extract = repo.asset_graph.get(dg.AssetKey(["movies_to_csv", "extract_actors"])).automation_condition
    assert "AssetKey(['movies_to_csv', 'source', 'actors'])" in repr(extract)
    assert not repo.schedule_defs
    sensor = repo.get_sensor_def("movies_to_csv_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert not repo.has_sensor_def("default_automation_condition_sensor")


@pytest.mark.parametrize(
    ("blocks", "step_block", "field"),
    [
        ({"automation": "sometimes"}, None, "automation"),
        ({"automation": {"on_cron": "61 * * * *"}}, None, "automation.on_cron"),
        ({"automation": {"on_cron": "0 6 * * *", "timezone": "Europe/Atlantis"}}, None, "automation.timezone"),
        ({"automation": {"on_cron": "0 6 * * *", "every": 2}}, None, "automation"),
        ({"automation": "eager", "schedule": {"cron": "0 6 * * *"}}, None, "automation"),
        ({}, {"automation": {"on_cron": "0 6 * * * *"}}, "steps[0].automation"),
        ({"schedule": {"cron": "0 6 * * *"}}, {"automation": "eager"}, "steps[0].automation"),
    ],
)
def test_invalid_automation_names_file_and_field(
    project: Path, blocks: dict, step_block: dict | None, field: str
) -> None:
    path = extend_pipeline(project, **blocks)
    if step_block is not None:
        text = path.read_text()
        key, value = next(iter(step_block.items()))
        path.write_text(text.replace("- id: extract-actors\n", f"- id: extract-actors\n  {key}: {value!r}\n", 1))
    with pytest.raises(PipelineSpecError) as error:
        load_pipeline(path)
    assert error.value.file == str(path)
    assert error.value.field.startswith(field), error.value


def test_validate_exits_2_on_a_bad_automation_and_writes_nothing(project: Path, clean_env: dict[str, str]) -> None:
    extend_pipeline(project, automation={"on_cron": "0 25 * * *"})
    result = run_cli(["validate", "movies_to_csv"], cwd=project, env=clean_env)
    assert result.returncode == 2, result.stderr
    assert f"{DEMO_PIPELINE}: automation.on_cron: '0 25 * * *' is not a valid cron expression" in result.stderr
    assert not (project / "logs").exists() and not (project / "output").exists()


@pytest.mark.e2e
def test_daemon_runs_an_on_cron_pipeline_through_its_automation_sensor(
    project: Path, clean_env: dict[str, str]
) -> None:
    """Under a real `dagster-daemon run`, the pipeline's automation sensor requests the extracts of an
    `automation: {on_cron}` pipeline after the cron tick and their `eager` writers with them, in one
    run, which completes like any run (session log, the source's rows). The cron names the next
    whole minute of today only, so a slow run is never overtaken by the next tick's run."""
    now = datetime.now(UTC)
    tick = (now + timedelta(minutes=2 if now.second > 40 else 1)).replace(second=0, microsecond=0)
    path = extend_pipeline(project, automation={"on_cron": f"{tick.minute} {tick.hour} * * *"})
    # The writers react to their extract instead (`eager`): requested in the same evaluation.
    path.write_text(path.read_text().replace("  mode: write\n", "  mode: write\n  automation: eager\n"))
    assert condition_label(repository(project), "movies_to_csv", "write_reviews_csv") == "eager"
    home = Path(clean_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**clean_env, "OSIRIS_PROJECT_DIR": str(project)}
    with running_daemon(project, env) as (process, log), dg.DagsterInstance.from_config(str(home)) as instance:

        def finished_run():  # type: ignore[no-untyped-def]
            runs = instance.get_runs()
            return runs[0] if runs and runs[0].is_finished else None

        run = wait_for("the automation sensor's run to finish", finished_run, log, process, timeout=240)
        assert run.status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-4000:]
        assert len(instance.get_runs()) == 1
        created = instance.get_run_record_by_id(run.run_id).create_timestamp
        assert created.timestamp() >= tick.timestamp(), f"requested at {created}, before the tick {tick}"
        assert run.tags.get("dagster/sensor_name") == AUTOMATION_SENSOR, run.tags
        assert {key.to_user_string() for key in run.asset_selection or []} == {
            f"movies_to_csv/{kind}_{table}{suffix}"
            for table in DEMO_TABLES
            for kind, suffix in (("extract", ""), ("write", "_csv"))
        }
    status = assert_session_valid(project / "logs" / f"run_{run.run_id}", steps=10)
    assert status["ok"] is True
    source = sqlite3.connect(project / ".osiris" / "demo" / "movies.sqlite")
    for table in DEMO_TABLES:
        assert_csv_has_the_source_rows(project / "output" / f"{table}.csv", source, table)
