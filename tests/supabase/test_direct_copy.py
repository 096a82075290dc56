"""The direct transport (pg_dsn): COPY in one transaction, value by value against the source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from osiris_dagster.demo.movies import demo_rows
from osiris_dagster.staging import iter_staged_batches
from osiris_dagster.targets.supabase.postgres_copy import PostgresTarget, copy_write
from osiris_dagster.targets.supabase.postgres_ddl import create_table_sql
from tests.supabase.tables import (
    AWKWARD_SCHEMA,
    assert_rows_equal,
    awkward_batches,
    awkward_rows,
    stage_demo_tables,
    table_rows,
)

pytestmark = pytest.mark.postgres

KEYS = {
    "actors": ["id"],
    "directors": ["id"],
    "movies": ["id"],
    "movie_actors": ["movie_id", "actor_id"],
    "reviews": ["id"],
}


def create(pg: psycopg.Connection, table: str, schema: pa.Schema, key: list[str]) -> None:
    pg.execute(create_table_sql("public", table, schema, key))  # type: ignore[arg-type]


class InjectedFailure(RuntimeError):
    pass


def failing_after_first(batches: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield batches[0]
    raise InjectedFailure("source died midway")


def test_demo_tables_land_value_by_value_in_every_mode(
    tmp_path: Path, pg: psycopg.Connection, pg_conninfo: str
) -> None:
    staged = stage_demo_tables(tmp_path)
    # The reference is the demo data itself (Python values), not what the product staged.
    expected = demo_rows()
    for mode in ("append", "upsert", "replace"):
        for table, extracted in staged.items():
            name = f"{table}_{mode}"
            create(pg, name, extracted.schema, KEYS[table])
            result = copy_write(
                PostgresTarget(pg_conninfo, "public", name),
                mode,  # type: ignore[arg-type]
                extracted.schema,
                iter_staged_batches(extracted.path),
                primary_key=KEYS[table],
            )
            assert result.rows == len(expected[table])
            order = ", ".join(f'"{c}"' for c in KEYS[table])
            assert_rows_equal(expected[table], table_rows(pg, name, order))


def test_awkward_values_survive_copy(pg: psycopg.Connection, pg_conninfo: str) -> None:
    create(pg, "awkward", AWKWARD_SCHEMA, ["id"])
    copy_write(
        PostgresTarget(pg_conninfo, "public", "awkward"), "append", AWKWARD_SCHEMA, awkward_batches(range(1, 61))
    )
    assert_rows_equal(awkward_rows(range(1, 61)), table_rows(pg, "awkward"))


def test_replace_leaves_exactly_the_new_rows(pg: psycopg.Connection, pg_conninfo: str) -> None:
    create(pg, "awkward", AWKWARD_SCHEMA, ["id"])
    target = PostgresTarget(pg_conninfo, "public", "awkward")
    copy_write(target, "append", AWKWARD_SCHEMA, awkward_batches(range(1, 101)))
    copy_write(
        target, "replace", AWKWARD_SCHEMA, awkward_batches(range(50, 131), label_suffix="new"), primary_key=["id"]
    )
    assert_rows_equal(awkward_rows(range(50, 131), "new"), table_rows(pg, "awkward"))


def test_upsert_twice_gives_the_same_rows(pg: psycopg.Connection, pg_conninfo: str) -> None:
    create(pg, "awkward", AWKWARD_SCHEMA, ["id"])
    target = PostgresTarget(pg_conninfo, "public", "awkward")
    copy_write(target, "append", AWKWARD_SCHEMA, awkward_batches(range(1, 21), label_suffix="old"))
    for _ in range(2):
        copy_write(target, "upsert", AWKWARD_SCHEMA, awkward_batches(range(10, 41)), primary_key=["id"])
    assert_rows_equal(awkward_rows(range(1, 10), "old") + awkward_rows(range(10, 41)), table_rows(pg, "awkward"))


@pytest.mark.parametrize("mode", ["append", "upsert", "replace"])
def test_failure_midway_leaves_previous_contents_intact(mode: str, pg: psycopg.Connection, pg_conninfo: str) -> None:
    create(pg, "awkward", AWKWARD_SCHEMA, ["id"])
    target = PostgresTarget(pg_conninfo, "public", "awkward")
    copy_write(target, "append", AWKWARD_SCHEMA, awkward_batches(range(1, 31)))
    before = table_rows(pg, "awkward")
    with pytest.raises(InjectedFailure):
        copy_write(
            target,
            mode,  # type: ignore[arg-type]
            AWKWARD_SCHEMA,
            failing_after_first(awkward_batches(range(20, 200), batch_rows=10, label_suffix="x")),
            primary_key=["id"],
        )
    assert_rows_equal(before, table_rows(pg, "awkward"))


def test_bad_value_midway_rolls_back_the_table_creation_too(pg: psycopg.Connection, pg_conninfo: str) -> None:
    ddl = create_table_sql("public", "created", AWKWARD_SCHEMA, ["id"])
    duplicate = awkward_batches(range(1, 11)) + awkward_batches(range(5, 6))  # id 5 twice: PK violation
    with pytest.raises(psycopg.errors.UniqueViolation):
        copy_write(
            PostgresTarget(pg_conninfo, "public", "created"),
            "append",
            AWKWARD_SCHEMA,
            duplicate,
            before_write=lambda connection: connection.execute(ddl),  # type: ignore[arg-type]
        )
    assert pg.execute("SELECT to_regclass('public.created')").fetchone() == (None,)


def test_ddl_maps_arrow_types_and_declares_the_primary_key(pg: psycopg.Connection) -> None:
    schema = pa.schema(
        [
            ("a", pa.int8()),
            ("b", pa.int16()),
            ("c", pa.int32()),
            ("d", pa.int64()),
            ("e", pa.float32()),
            ("f", pa.float64()),
            ("g", pa.decimal128(12, 3)),
            ("h", pa.string()),
            ("i", pa.binary()),
            ("j", pa.bool_()),
            ("k", pa.date32()),
            ("l", pa.timestamp("us")),
            ("m", pa.time64("us")),
            ("Mixed Case", pa.string()),
        ]
    )
    create(pg, "typed", schema, ["d", "Mixed Case"])
    types = dict(
        pg.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns "
            "JOIN pg_attribute ON attrelid = 'public.typed'::regclass AND attname = column_name "
            "WHERE table_name = 'typed'"
        ).fetchall()
    )
    assert types == {
        "a": "smallint",
        "b": "smallint",
        "c": "integer",
        "d": "bigint",
        "e": "real",
        "f": "double precision",
        "g": "numeric(12,3)",
        "h": "text",
        "i": "bytea",
        "j": "boolean",
        "k": "date",
        "l": "timestamp without time zone",
        "m": "time without time zone",
        "Mixed Case": "text",
    }
    key = pg.execute(
        "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = 'public.typed'::regclass AND i.indisprimary"
    ).fetchone()
    assert key == (["d", "Mixed Case"],)
