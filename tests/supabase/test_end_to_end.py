"""The supabase.writer through the product: `osiris-dagster run`, session events, masking, validation."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from osiris_dagster.cli import cli
from osiris_dagster.demo.movies import demo_rows
from osiris_dagster.session.catalogue import validator
from tests.conftest import run_cli
from tests.supabase.conftest import SERVICE_KEY
from tests.supabase.postgrest_server import PostgrestServer
from tests.supabase.tables import assert_rows_equal, table_rows

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

DSN_PASSWORD = "pg-Pa55word-e2e-77"  # trust auth ignores it; it must still never be written anywhere

REST_PIPELINE = {
    "oml_version": "0.1.0",
    "name": "movies-to-supabase-rest",
    "steps": [
        {
            "id": "extract-movies",
            "component": "sql.extractor",
            "mode": "read",
            "config": {"connection": "@sqlite.movies", "query": "SELECT * FROM movies ORDER BY id"},
        },
        {
            "id": "extract-movie-actors",
            "component": "sql.extractor",
            "mode": "read",
            "config": {
                "connection": "@sqlite.movies",
                "query": "SELECT * FROM movie_actors ORDER BY movie_id, actor_id",
            },
        },
        {
            "id": "write-movies",
            "component": "supabase.writer",
            "mode": "write",
            "needs": ["extract-movies"],
            "config": {
                "connection": "@supabase.main",
                "table": "movies",
                "write_mode": "upsert",
                "primary_key": "id",
                "create_if_missing": True,
                "transport": "rest",
                "batch_size": 4,
                "retry": {"attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.1},
            },
        },
        {
            "id": "write-movie-actors",
            "component": "supabase.writer",
            "mode": "write",
            "needs": ["extract-movie-actors"],
            "config": {
                "connection": "@supabase.main",
                "table": "movie_actors",
                "write_mode": "replace",
                "primary_key": ["movie_id", "actor_id"],
                "create_if_missing": True,
                "transport": "rest",
            },
        },
    ],
}


def supabase_env(env: dict[str, str], server: PostgrestServer, conninfo: str, key: str = SERVICE_KEY) -> dict[str, str]:
    return {
        **env,
        "SUPABASE_URL": server.url,
        "SUPABASE_SERVICE_ROLE_KEY": key,
        "SUPABASE_PG_DSN": conninfo.replace("postgres@", f"postgres:{DSN_PASSWORD}@"),
    }


def session_events(project: Path) -> list[dict]:
    (session,) = (project / "logs").glob("run_*")
    return [json.loads(line) for line in (session / "events.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_schema_valid(events: list[dict]) -> None:
    check = validator("events")
    for event in events:
        errors = [e.message for e in check.iter_errors(event)]
        assert not errors, (event, errors)


def every_byte(*roots: Path) -> bytes:
    return b"".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())


def expected_movies() -> list[dict]:
    # SQLite stores the BOOLEAN as 0/1; the table's column is boolean again (declared type BOOLEAN).
    return demo_rows()["movies"]


def test_demo_pipeline_writes_every_table_over_copy_and_twice_gives_the_same_rows(
    project: Path, clean_env: dict[str, str], postgrest: PostgrestServer, pg_conninfo: str, pg: psycopg.Connection
) -> None:
    env = supabase_env(clean_env, postgrest, pg_conninfo)
    for _ in range(2):
        result = run_cli(["run", "movies_to_supabase"], cwd=project, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    rows = demo_rows()
    for table in ("actors", "directors", "reviews", "movie_actors"):
        order = "movie_id, actor_id" if table == "movie_actors" else "id"
        assert_rows_equal(rows[table], table_rows(pg, table, order))
    assert_rows_equal(expected_movies(), table_rows(pg, "movies", "id"))
    sessions = sorted((project / "logs").glob("run_*"))
    events = [json.loads(line) for s in sessions for line in (s / "events.jsonl").read_text().splitlines()]
    assert_schema_valid(events)
    starts = [e for e in events if e["event"] == "write.start"]
    assert len(starts) == 10 and {e["transport"] for e in starts} == {"direct"}
    # Tables are created by the first run only; the plan is recorded both times.
    assert len([e for e in events if e["event"] == "table.ddl_executed"]) == 5
    assert len([e for e in events if e["event"] == "table.ddl_planned"]) == 10
    assert DSN_PASSWORD.encode() not in every_byte(project)


def test_rest_pipeline_runs_through_the_product_with_schema_valid_events(
    project: Path, clean_env: dict[str, str], postgrest: PostgrestServer, pg_conninfo: str, pg: psycopg.Connection
) -> None:
    (project / "assets" / "rest.yaml").write_text(yaml.safe_dump(REST_PIPELINE, sort_keys=False), encoding="utf-8")
    result = run_cli(["run", "rest"], cwd=project, env=supabase_env(clean_env, postgrest, pg_conninfo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_rows_equal(expected_movies(), table_rows(pg, "movies", "id"))
    assert_rows_equal(demo_rows()["movie_actors"], table_rows(pg, "movie_actors", "movie_id, actor_id"))
    events = session_events(project)
    assert_schema_valid(events)
    names = [e["event"] for e in events if e.get("step_id") == "write-movies"]
    for expected in ("table.ddl_planned", "table.ddl_executed", "write.start", "write.progress", "write.complete"):
        assert expected in names, names
    assert names.index("table.ddl_planned") < names.index("table.ddl_executed") < names.index("write.complete")
    progress = [e["rows_written"] for e in events if e["event"] == "write.progress" and e["step_id"] == "write-movies"]
    assert progress == sorted(progress) and progress[-1] == len(demo_rows()["movies"])
    (complete,) = [e for e in events if e["event"] == "write.complete" and e["step_id"] == "write-movies"]
    assert complete["rows_written"] == len(demo_rows()["movies"])
    (start,) = [e for e in events if e["event"] == "write.start" and e["step_id"] == "write-movie-actors"]
    assert start["transport"] == "rest" and start["write_mode"] == "replace" and start["table"] == "public.movie_actors"
    plan = project / events[[e["event"] for e in events].index("table.ddl_planned")]["path"]
    assert "PRIMARY KEY" in plan.read_text()
    assert DSN_PASSWORD.encode() not in every_byte(project)


def test_wrong_key_fails_the_run_and_never_reaches_any_byte(
    project: Path, clean_env: dict[str, str], postgrest: PostgrestServer, pg_conninfo: str, pg: psycopg.Connection
) -> None:
    wrong_key = "sb-WRONG-service-key-0c9d8e7f6a5b"
    (project / "assets" / "rest.yaml").write_text(yaml.safe_dump(REST_PIPELINE, sort_keys=False), encoding="utf-8")
    env = supabase_env(clean_env, postgrest, pg_conninfo, key=wrong_key)
    result = run_cli(["run", "rest"], cwd=project, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Supabase rejected the service role key (HTTP 401)" in result.stdout
    events = session_events(project)
    assert_schema_valid(events)
    errors = [e for e in events if e["event"] == "write.error"]
    assert errors and all("HTTP 401" in e["error"] for e in errors)
    assert [e for e in events if e["event"] == "write.retry"] == []
    # Every request with the wrong key was refused once, never retried.
    assert {r.status for r in postgrest.requests} == {401}
    haystack = every_byte(project, Path(env["DAGSTER_HOME"])) + result.stdout.encode() + result.stderr.encode()
    assert wrong_key.encode() not in haystack
    assert DSN_PASSWORD.encode() not in haystack


def validate(project: Path, document: dict) -> tuple[int, str]:
    (project / "assets" / "check.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--project-dir", str(project), "validate", "check"])
    return result.exit_code, result.output


def with_writer_config(**changes: object) -> dict:
    document = json.loads(json.dumps(REST_PIPELINE))
    config = document["steps"][2]["config"]
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return document


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"batchsize": 10}, "steps[2].config", "batchsize"),
        ({"write_mode": "merge"}, "steps[2].config.write_mode", "merge"),
        ({"primary_key": None}, "steps[2].config", "primary_key"),
        ({"retry": {"attempts": 3, "jitter": 1}}, "steps[2].config.retry", "jitter"),
    ],
    ids=["unknown-key", "unknown-mode", "upsert-without-key", "unknown-retry-knob"],
)
def test_bad_writer_config_exits_2_naming_the_field(
    project: Path, monkeypatch: pytest.MonkeyPatch, changes: dict, field: str, words: str
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "unused-key-for-validation")
    code, output = validate(project, with_writer_config(**changes))
    assert code == 2, output
    assert field in output and words in output, output


def test_primary_key_is_structure_not_a_secret(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "unused-key-for-validation")
    code, output = validate(project, with_writer_config(primary_key="id"))
    assert code == 0, output
