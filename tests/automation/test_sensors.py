"""The source-change sensor (baseline, then only changed tables) and the run-failure alert."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from osiris_dagster.components.sensors import run_alert_sensor
from osiris_dagster.connections import demo_database_path
from osiris_dagster.project import ProjectLayout
from osiris_dagster.session.catalogue import validator
from osiris_dagster.session.reader import SessionRecord
from osiris_dagster.sources.fingerprint import source_table
from tests.automation.helpers import extend_pipeline, repository, write_pipeline

JOB = "movies_to_csv"


@pytest.fixture(autouse=True)
def project_dir(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSIRIS_PROJECT_DIR", str(project))
    for name in ("OSIRIS_PARAM_MOVIES_DB", "MYSQL_DATABASE"):
        monkeypatch.delenv(name, raising=False)


def evaluate(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return sensor.evaluate_tick(context)


def test_source_change_sensor_records_a_baseline_then_runs_only_the_changed_table(project: Path) -> None:
    extend_pipeline(project, sensor={"source_change": {"minimum_interval_seconds": 5}})
    sensor = repository(project).get_sensor_def("movies_to_csv_source_change")
    assert sensor.minimum_interval_seconds == 5
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    with dg.instance_for_test() as instance:
        first = evaluate(sensor, instance, None)
        assert not first.run_requests and "baseline" in (first.skip_message or "")
        baseline = json.loads(first.cursor or "")
        assert set(baseline) == {
            "extract-actors",
            "extract-directors",
            "extract-movies",
            "extract-movie-actors",
            "extract-reviews",
        }

        unchanged = evaluate(sensor, instance, first.cursor)
        assert not unchanged.run_requests and unchanged.cursor == first.cursor

        with sqlite3.connect(demo_database_path(ProjectLayout(project), "movies")) as db:
            db.execute("INSERT INTO actors (id, name) VALUES (9001, 'New Actor')")
        changed = evaluate(sensor, instance, first.cursor)
    (request,) = changed.run_requests or []
    assert set(request.asset_selection or []) == {
        dg.AssetKey([JOB, "extract_actors"]),
        dg.AssetKey([JOB, "write_actors_csv"]),
    }
    assert request.tags["osiris/changed_steps"] == "extract-actors"
    after = json.loads(changed.cursor or "")
    assert after["extract-actors"] != baseline["extract-actors"]
    assert {k: v for k, v in after.items() if k != "extract-actors"} == {
        k: v for k, v in baseline.items() if k != "extract-actors"
    }


def test_unreachable_source_keeps_its_fingerprint_and_the_sensor_keeps_going(project: Path) -> None:
    extend_pipeline(project, sensor={"source_change": {}})
    sensor = repository(project).get_sensor_def("movies_to_csv_source_change")
    with dg.instance_for_test() as instance:
        first = evaluate(sensor, instance, None)
        with sqlite3.connect(demo_database_path(ProjectLayout(project), "movies")) as db:
            db.execute("ALTER TABLE reviews RENAME TO reviews_gone")
            db.execute("DELETE FROM directors WHERE id = (SELECT MAX(id) FROM directors)")
        second = evaluate(sensor, instance, first.cursor)
    (request,) = second.run_requests or []
    assert request.tags["osiris/changed_steps"] == "extract-directors"
    assert json.loads(second.cursor or "")["extract-reviews"] == json.loads(first.cursor or "")["extract-reviews"]


def test_pipeline_without_sensor_block_has_no_source_change_sensor(project: Path) -> None:
    names = [sensor.name for sensor in repository(project).sensor_defs]
    assert sorted(names) == ["e2b_sandbox_reaper", "osiris_abandoned_runs", "osiris_run_alert"]


@pytest.mark.parametrize(
    ("table", "query", "expected"),
    [
        ("shop.items", None, "shop.items"),
        (None, "SELECT * FROM actors ORDER BY id", "actors"),
        (None, "select id, name from actors where id > 3 limit 10", "actors"),
        (None, "SELECT * FROM movies m JOIN directors d ON d.id = m.director_id", None),
        (None, "SELECT * FROM actors WHERE id IN (SELECT actor_id FROM movie_actors)", None),
        (None, "SELECT * FROM actors UNION SELECT * FROM directors", None),
    ],
)
def test_fingerprint_uses_the_table_only_when_the_query_reads_one(table, query, expected) -> None:  # type: ignore[no-untyped-def]
    assert source_table(table, query) == expected


def test_run_failure_records_a_run_alert_naming_the_step_and_the_masked_error(project: Path) -> None:
    write_pipeline(
        project,
        "broken",
        {
            "oml_version": "0.1.0",
            "name": "broken",
            "steps": [
                {
                    "id": "extract-ghosts",
                    "component": "sql.extractor",
                    "mode": "read",
                    "config": {"connection": "@sqlite.movies", "query": "SELECT * FROM ghosts"},
                },
                {
                    "id": "write-ghosts",
                    "component": "filesystem.csv_writer",
                    "mode": "write",
                    "needs": ["extract-ghosts"],
                    "config": {"path": "output/ghosts.csv"},
                },
            ],
        },
    )
    repo = repository(project)
    with dg.instance_for_test() as instance:
        result = repo.get_job("broken").execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        (failure,) = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        context = dg.build_run_status_sensor_context(
            sensor_name="osiris_run_alert",
            dagster_event=failure.event_log_entry.dagster_event,
            dagster_instance=instance,
            dagster_run=run,
        ).for_run_failure()
        run_alert_sensor(context)
    events = SessionRecord.read(ProjectLayout(project).session_dir(result.run_id)).events
    (alert,) = [line for line in events if line["event"] == "run_alert"]
    assert alert["step_id"] == "extract-ghosts"
    assert alert["job"] == "broken"
    assert "ghosts" in alert["error"]
    validator("events").validate(alert)
