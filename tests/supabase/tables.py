"""Test tables for the Supabase writer: the demo database staged as Arrow, and an awkward table."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa

from osiris_dagster.demo.movies import TABLES, load_demo_data
from osiris_dagster.sources.sql_extract import extract_to_staging
from osiris_dagster.staging import ExtractedTable, iter_staged_batches

AWKWARD_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("small", pa.int16()),
        ("label", pa.string()),
        ("amount", pa.decimal128(20, 6)),
        ("ratio", pa.float64()),
        ("flag", pa.bool_()),
        ("born", pa.date32()),
        ("seen_at", pa.timestamp("us")),
        ("seen_utc", pa.timestamp("us", tz="UTC")),
        ("at_time", pa.time64("us")),
        ("payload", pa.binary()),
    ]
)


def awkward_rows(ids: range, label_suffix: str = "") -> list[dict[str, Any]]:
    rows = []
    for i in ids:
        odd = i % 2 == 1
        rows.append(
            {
                "id": i,
                "small": None if i % 5 == 0 else -i,
                "label": [f'Zoë, "quoted"\n{i}{label_suffix}', "", None, f"渡辺 謙 {i}{label_suffix}", "a\\b\tc"][
                    i % 5
                ],
                "amount": None if i % 7 == 0 else Decimal(f"{i}123456789.000001") * (-1 if odd else 1),
                "ratio": [0.1, float("nan"), float("inf"), None, 1e-300][i % 5],
                "flag": None if i % 3 == 0 else odd,
                "born": dt.date(1900 + i % 200, 1 + i % 12, 1 + i % 28),
                "seen_at": None if i % 4 == 0 else dt.datetime(2024, 2, 29, 23, 59, 59, i % 1_000_000),
                "seen_utc": dt.datetime(2001, 9, 9, 1, 46, 40, 123456, tzinfo=dt.UTC),
                "at_time": dt.time(i % 24, 30, 15, 250000),
                "payload": None if i % 6 == 0 else bytes([0, 255, i % 256]) + b"\\x",
            }
        )
    return rows


def awkward_batches(ids: range, batch_rows: int = 50, label_suffix: str = "") -> list[pa.RecordBatch]:
    rows = awkward_rows(ids, label_suffix)
    return [
        pa.RecordBatch.from_pylist(rows[start : start + batch_rows], schema=AWKWARD_SCHEMA)
        for start in range(0, len(rows), batch_rows)
    ]


def stage_demo_tables(directory: Path) -> dict[str, ExtractedTable]:
    """The demo database, extracted exactly as the product does (SQLite -> staged Arrow IPC)."""
    database = directory / "movies.sqlite"
    load_demo_data(f"sqlite:///{database}")
    order = {"movie_actors": "movie_id, actor_id"}
    return {
        table: extract_to_staging(
            f"sqlite:///{database}",
            f"SELECT * FROM {table} ORDER BY {order.get(table, 'id')}",
            directory / f"{table}.arrow",
            batch_rows=7,  # several staged batches, so batching across them is exercised
        )
        for table in TABLES
    }


def staged_rows(extracted: ExtractedTable) -> list[dict[str, Any]]:
    return [row for batch in iter_staged_batches(extracted.path) for row in batch.to_pylist()]


def table_rows(pg: psycopg.Connection, table: str, order: str = "1") -> list[dict[str, Any]]:
    with pg.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        return list(cursor.execute(f'SELECT * FROM "public"."{table}" ORDER BY {order}'))


def same_value(expected: Any, actual: Any) -> bool:
    """Value equality as a reader of the table sees it (NaN equals NaN; bytea comes back as bytes)."""
    if isinstance(expected, float) and expected != expected:
        return isinstance(actual, float) and actual != actual
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual or (expected == actual and type(expected) is type(actual))
    if isinstance(actual, memoryview):
        actual = bytes(actual)
    return expected == actual


def assert_rows_equal(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> None:
    assert len(actual) == len(expected), f"{len(actual)} rows in the table, {len(expected)} expected"
    for want, got in zip(expected, actual, strict=True):
        assert set(got) == set(want), (sorted(got), sorted(want))
        for column, value in want.items():
            assert same_value(value, got[column]), f"row {want.get('id', want)}: {column}: {got[column]!r} != {value!r}"
