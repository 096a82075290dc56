"""A pipeline's `schedule:` block: a ScheduleDefinition for its job, or an error naming the field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from tests.automation.helpers import broken_pipelines, extend_pipeline, repository
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def project_dir(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSIRIS_PROJECT_DIR", str(project))


def test_schedule_block_becomes_a_schedule_of_the_pipeline_job(project: Path) -> None:
    extend_pipeline(project, schedule={"cron": "0 6 * * 1-5", "timezone": "Europe/Prague", "enabled": True})
    schedule = repository(project).get_schedule_def("movies_to_csv_schedule")
    assert schedule.cron_schedule == "0 6 * * 1-5"
    assert schedule.execution_timezone == "Europe/Prague"
    assert schedule.job_name == "movies_to_csv"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    with dg.instance_for_test() as instance:
        when = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        result = schedule.evaluate_tick(context)
    (request,) = result.run_requests or []
    assert request.tags["osiris/pipeline"] == "movies-to-csv"


def test_disabled_schedule_is_declared_but_stopped(project: Path) -> None:
    extend_pipeline(project, schedule={"cron": "@daily", "enabled": False})
    schedule = repository(project).get_schedule_def("movies_to_csv_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.execution_timezone == "UTC"


def test_pipeline_without_schedule_has_none(project: Path) -> None:
    assert not repository(project).schedule_defs


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"cron": "61 * * * *"}, "schedule.cron"),
        ({"cron": "0 0 30 2 *"}, "schedule.cron"),
        ({"cron": "0 6 * * *", "timezone": "Europe/Atlantis"}, "schedule.timezone"),
    ],
)
def test_invalid_schedule_names_the_field(project: Path, block: dict, field: str) -> None:
    extend_pipeline(project, schedule=block)
    # The code location still loads; the file shows as broken, its error naming the field.
    assert broken_pipelines(project)["assets/movies_to_csv.yaml"].startswith(f"{field}: ")


@pytest.mark.parametrize("block", [{"cron": "every morning"}, {"cron": "0 6 * *"}, {"cron": "0 6 * * *", "at": 1}])
def test_validate_refuses_a_malformed_schedule_with_exit_2(project: Path, clean_env: dict, block: dict) -> None:
    extend_pipeline(project, schedule=block)
    result = run_cli(["validate", "movies_to_csv"], cwd=project, env=clean_env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "schedule" in result.stderr + result.stdout
