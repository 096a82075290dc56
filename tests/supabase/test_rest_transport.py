"""The REST transport against a PostgREST-compatible server on real PostgreSQL: values, modes, retries."""

from __future__ import annotations

import time

import httpx
import psycopg
import pyarrow as pa
import pytest

from osiris_dagster.targets.supabase.postgres_ddl import create_table_sql
from osiris_dagster.targets.supabase.rest import (
    AmbiguousWriteError,
    RetryPolicy,
    SupabaseAuthError,
    SupabaseRestWriter,
)
from tests.supabase.conftest import SERVICE_KEY
from tests.supabase.postgrest_server import Fault, PostgrestServer
from tests.supabase.tables import AWKWARD_SCHEMA, assert_rows_equal, awkward_batches, awkward_rows, table_rows

pytestmark = pytest.mark.postgres

FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05)


def writer(server: PostgrestServer, retries: list[tuple[int, int, str]], key: str = SERVICE_KEY) -> SupabaseRestWriter:
    return SupabaseRestWriter(
        server.url, key, "public", "awkward", retry=FAST, on_retry=lambda *event: retries.append(event)
    )


@pytest.fixture
def awkward(pg: psycopg.Connection) -> str:
    pg.execute(create_table_sql("public", "awkward", AWKWARD_SCHEMA, ["id"]))  # type: ignore[arg-type]
    return "awkward"


def posts(server: PostgrestServer) -> list[int | None]:
    return [r.status for r in server.requests if r.method == "POST"]


def test_values_arrive_exactly_as_over_copy(postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str) -> None:
    with writer(postgrest, []) as rest:
        rows = rest.write("append", AWKWARD_SCHEMA, awkward_batches(range(1, 61), batch_rows=7), batch_size=25)
    assert rows == 60
    assert_rows_equal(awkward_rows(range(1, 61)), table_rows(pg, awkward))
    # 60 rows in requests of 25: batching ignores the staged batch boundaries.
    assert [r.body_rows for r in postgrest.requests if r.method == "POST"] == [25, 25, 10]


def test_upsert_twice_gives_the_same_rows(postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str) -> None:
    with writer(postgrest, []) as rest:
        rest.write("append", AWKWARD_SCHEMA, awkward_batches(range(1, 21), label_suffix="old"))
        for _ in range(2):
            rest.write("upsert", AWKWARD_SCHEMA, awkward_batches(range(10, 41)), primary_key=["id"], batch_size=8)
    assert_rows_equal(awkward_rows(range(1, 10), "old") + awkward_rows(range(10, 41)), table_rows(pg, awkward))


def test_replace_leaves_exactly_the_new_rows(postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str) -> None:
    with writer(postgrest, []) as rest:
        rest.write("append", AWKWARD_SCHEMA, awkward_batches(range(1, 1301)), batch_size=500)
        rest.write("replace", AWKWARD_SCHEMA, awkward_batches(range(700, 731), label_suffix="new"), primary_key=["id"])
    assert_rows_equal(awkward_rows(range(700, 731), "new"), table_rows(pg, awkward))


def test_replace_with_a_composite_key_of_awkward_text(postgrest: PostgrestServer, pg: psycopg.Connection) -> None:
    schema = pa.schema([("k1", pa.string()), ("k2", pa.int32()), ("v", pa.string())])
    pg.execute(create_table_sql("public", "pairs", schema, ["k1", "k2"]))  # type: ignore[arg-type]
    old = [{"k1": k, "k2": n, "v": "old"} for k in ["a,b", 'q"x', "(p)", "dot.ted", "sp ace"] for n in (1, 2)]
    new = [{"k1": k, "k2": 2, "v": "new"} for k in ["a,b", "(p)", "fresh"]]
    with SupabaseRestWriter(postgrest.url, SERVICE_KEY, "public", "pairs", retry=FAST) as rest:
        rest.write("append", schema, [pa.RecordBatch.from_pylist(old, schema=schema)])
        rest.write("replace", schema, [pa.RecordBatch.from_pylist(new, schema=schema)], primary_key=["k1", "k2"])
    assert table_rows(pg, "pairs", "k1, k2") == sorted(new, key=lambda r: (r["k1"], r["k2"]))


def test_503_twice_then_success_writes_every_row_exactly_once(
    postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str
) -> None:
    postgrest.faults.extend([Fault(status=503, methods=("POST",)), Fault(status=503, methods=("POST",))])
    retries: list[tuple[int, int, str]] = []
    with writer(postgrest, retries) as rest:
        assert rest.write("append", AWKWARD_SCHEMA, awkward_batches(range(1, 41)), batch_size=20) == 40
    assert_rows_equal(awkward_rows(range(1, 41)), table_rows(pg, awkward))
    assert posts(postgrest) == [503, 503, 201, 201]
    assert [(attempt, reason.startswith("HTTP 503")) for attempt, _, reason in retries] == [(1, True), (2, True)]
    assert all(0 <= delay_ms <= 50 for _, delay_ms, _ in retries)  # full jitter under the 0.05 s cap


def test_429_waits_the_retry_after_the_server_asked_for(
    postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str
) -> None:
    postgrest.faults.append(Fault(status=429, retry_after="1", methods=("POST",)))
    retries: list[tuple[int, int, str]] = []
    started = time.monotonic()
    with writer(postgrest, retries) as rest:
        rest.write("upsert", AWKWARD_SCHEMA, awkward_batches(range(1, 11)), primary_key=["id"])
    elapsed = time.monotonic() - started
    assert retries == [(1, 1000, retries[0][2])] and retries[0][2].startswith("HTTP 429")
    assert 1.0 <= elapsed < 3.0, elapsed  # the backoff cap (0.05 s) did not override Retry-After
    assert_rows_equal(awkward_rows(range(1, 11)), table_rows(pg, awkward))


def test_wrong_key_fails_at_once_without_retries_and_without_the_key(
    postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str
) -> None:
    wrong = "sb-wrong-key-4d1e0b77aa"
    retries: list[tuple[int, int, str]] = []
    with writer(postgrest, retries, key=wrong) as rest, pytest.raises(SupabaseAuthError) as raised:
        rest.write("upsert", AWKWARD_SCHEMA, awkward_batches(range(1, 11)), primary_key=["id"])
    message = str(raised.value)
    assert message.startswith("Supabase rejected the service role key (HTTP 401)")
    assert wrong not in message and SERVICE_KEY not in message
    assert retries == [] and posts(postgrest) == [401]
    assert table_rows(pg, awkward) == []


def test_validation_error_is_not_retried(postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str) -> None:
    bad = pa.schema([("id", pa.int64()), ("no_such_column", pa.string())])
    retries: list[tuple[int, int, str]] = []
    with writer(postgrest, retries) as rest, pytest.raises(Exception, match="HTTP 400"):
        rest.write("append", bad, [pa.RecordBatch.from_pylist([{"id": 1, "no_such_column": "x"}], schema=bad)])
    assert retries == [] and posts(postgrest) == [400]


@pytest.mark.parametrize("mode", ["upsert", "append"])
def test_connection_dropped_after_commit_is_retried_without_duplicates(
    mode: str, postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str
) -> None:
    # The second batch is committed by the server, then the socket closes with no answer.
    postgrest.faults.append(Fault(drop_after_commit=True, methods=("POST",)))
    retries: list[tuple[int, int, str]] = []
    with writer(postgrest, retries) as rest:
        written = rest.write(mode, AWKWARD_SCHEMA, awkward_batches(range(1, 31)), primary_key=["id"], batch_size=10)  # type: ignore[arg-type]
    assert written == 30
    assert [attempt for attempt, _, _ in retries] == [1] and "RemoteProtocolError" in retries[0][2]
    assert posts(postgrest) == [None, 201, 201, 201]
    # Append retried the dropped batch as insert-ignoring-duplicates on the key: no row twice.
    retried = [r for r in postgrest.requests if r.method == "POST"][1]
    assert ("ignore-duplicates" in retried.headers["prefer"]) == (mode == "append")
    assert_rows_equal(awkward_rows(range(1, 31)), table_rows(pg, awkward))


def test_append_without_a_key_does_not_risk_a_duplicate(
    postgrest: PostgrestServer, pg: psycopg.Connection, awkward: str
) -> None:
    postgrest.faults.append(Fault(drop_after_commit=True, methods=("POST",)))
    retries: list[tuple[int, int, str]] = []
    with writer(postgrest, retries) as rest, pytest.raises(AmbiguousWriteError, match="not retried"):
        rest.write("append", AWKWARD_SCHEMA, awkward_batches(range(1, 11)))
    assert retries == []
    assert len(table_rows(pg, awkward)) == 10  # committed once by the server, never resent


def test_unreachable_server_is_retried_then_reported(awkward: str) -> None:
    retries: list[tuple[int, int, str]] = []
    rest = SupabaseRestWriter(
        "http://127.0.0.1:9", SERVICE_KEY, "public", "awkward", retry=FAST, on_retry=lambda *e: retries.append(e)
    )
    with rest, pytest.raises(httpx.ConnectError):
        rest.write("append", AWKWARD_SCHEMA, awkward_batches(range(1, 3)))
    assert [attempt for attempt, _, _ in retries] == [1, 2, 3]  # 4 attempts in all


def test_missing_table_is_reported(postgrest: PostgrestServer) -> None:
    with SupabaseRestWriter(postgrest.url, SERVICE_KEY, "public", "nowhere", retry=FAST) as rest:
        assert rest.table_exists() is False
