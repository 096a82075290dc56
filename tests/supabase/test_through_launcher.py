"""The Supabase pipeline through the E2B launcher (local backend) writes the same rows as locally."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from dagster import DagsterRunStatus

from osiris_dagster.sandbox_server import LocalSandboxServer
from tests.conftest import run_cli
from tests.remote.conftest import dagster_launch, instance_for, remote_home, sandbox_server, wait_for_run
from tests.supabase.postgrest_server import PostgrestServer
from tests.supabase.tables import table_rows
from tests.supabase.test_end_to_end import DSN_PASSWORD, every_byte, supabase_env

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox, pytest.mark.e2e]
__all__ = ["remote_home", "sandbox_server"]  # fixtures used here, defined with the remote tests

TABLES = {"actors": "id", "directors": "id", "movies": "id", "movie_actors": "movie_id, actor_id", "reviews": "id"}


def all_rows(pg: psycopg.Connection) -> dict[str, list[dict]]:
    return {table: table_rows(pg, table, order) for table, order in TABLES.items()}


def test_supabase_pipeline_through_the_launcher_writes_the_rows_a_local_run_writes(
    project: Path,
    remote_home,  # type: ignore[no-untyped-def]
    sandbox_server: LocalSandboxServer,
    postgrest: PostgrestServer,
    pg_conninfo: str,
    pg: psycopg.Connection,
) -> None:
    _home, env = remote_home()
    env = supabase_env(env, postgrest, pg_conninfo)
    # A sandbox reaches the host's services at the server's host address, not at its own 127.0.0.1.
    port = int(postgrest.url.rsplit(":", 1)[1])
    host = sandbox_server.forward(port)
    env["SUPABASE_URL"] = f"http://{host}:{port}"
    env["SUPABASE_PG_DSN"] = env["SUPABASE_PG_DSN"].replace("@127.0.0.1:", f"@{host}:")
    local = run_cli(["run", "movies_to_supabase"], cwd=project, env=env)
    assert local.returncode == 0, local.stdout + local.stderr
    written_locally = all_rows(pg)
    assert sum(len(rows) for rows in written_locally.values()) == 110
    for table in TABLES:
        pg.execute(f'DROP TABLE "{table}"')

    run_id = dagster_launch(project, env, job="movies_to_supabase")
    run = wait_for_run(instance_for(env), run_id)
    assert run.status == DagsterRunStatus.SUCCESS
    assert all_rows(pg) == written_locally
    assert DSN_PASSWORD.encode() not in every_byte(project, Path(env["DAGSTER_HOME"]))
