"""The direct Postgres transport of the Supabase writer: COPY, one transaction per write.

Rows go in with ``COPY ... FROM STDIN (FORMAT csv)``: each Arrow batch is rendered to CSV by
Arrow's C++ writer and streamed into the COPY as it is produced, so memory stays at about one
batch and Python never touches a row (that is what makes >100k rows/s possible; a per-row
``copy.write_row`` spends most of its time in Python). CSV rather than binary COPY because the
binary format needs the exact Postgres OID of every column up front, while CSV goes through each
column's input function, exactly like a literal would. In Postgres CSV an unquoted empty field is
NULL and ``""`` an empty string; Arrow quotes every string value, so the two never collide.

Every mode is ONE transaction, so a failure anywhere (a bad value, a dropped connection, the
batch iterator raising) rolls back to the previous contents:

* ``append``:  COPY into the table;
* ``upsert``:  COPY into a temp table (``ON COMMIT DROP``), then
  ``INSERT ... SELECT ... ON CONFLICT (pk) DO UPDATE`` every non-key column;
* ``replace``: ``DELETE FROM`` the table, then COPY into it. DELETE rather than TRUNCATE: TRUNCATE
  takes an ACCESS EXCLUSIVE lock for the whole write and is not MVCC-safe, so concurrent readers
  would block (or, in an older snapshot, see an empty table); with DELETE they keep seeing the old
  rows until the commit. The price is a slower delete and dead tuples for autovacuum on big tables.

Deliberately not here: the REST transport, DDL planning (``postgres_ddl``), events, retries (a
failed transaction is rolled back and reported; re-running the step is the retry).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy.engine import make_url

from osiris_dagster.targets.supabase.postgres_ddl import qualified_name, quote_identifier

__all__ = ["CopyResult", "PostgresTarget", "copy_write", "postgres_conninfo"]

WriteMode = Literal["append", "upsert", "replace"]

_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


@dataclass(frozen=True)
class PostgresTarget:
    """Where the rows go: a libpq connection string and the table."""

    conninfo: str
    schema: str
    table: str

    @property
    def qualified(self) -> str:
        return qualified_name(self.schema, self.table)


@dataclass(frozen=True)
class CopyResult:
    rows: int
    mode: WriteMode


def postgres_conninfo(dsn: str) -> str:
    """A libpq connection string from a DSN, accepting SQLAlchemy spellings (``postgresql+psycopg://``)."""
    if "://" not in dsn:
        return dsn  # already "host=... dbname=..." form
    url = make_url(dsn)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def connect(conninfo: str) -> psycopg.Connection:
    # A server that is down should fail the step in seconds, not hang it.
    return psycopg.connect(conninfo, connect_timeout=10)


def copy_write(
    target: PostgresTarget,
    mode: WriteMode,
    arrow_schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    *,
    primary_key: Sequence[str] = (),
    before_write: Callable[[psycopg.Connection], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> CopyResult:
    """Write every batch to the table in one transaction; return the number of rows written.

    ``before_write`` runs inside the same transaction before any row moves (the writer creates
    the table there, so a failed write also leaves no half-created table behind).
    """
    if mode in ("upsert", "replace") and not primary_key:
        raise ValueError(f"write_mode '{mode}' needs a primary_key")
    columns = list(arrow_schema.names)
    column_list = ", ".join(quote_identifier(c) for c in columns)
    with connect(target.conninfo) as connection:  # commits on success, rolls back on any exception
        if before_write is not None:
            before_write(connection)
        with connection.cursor() as cursor:
            if mode == "append":
                rows = _copy(cursor, target.qualified, column_list, batches, on_progress)
            elif mode == "replace":
                cursor.execute(f"DELETE FROM {target.qualified}")
                rows = _copy(cursor, target.qualified, column_list, batches, on_progress)
            else:
                staging = quote_identifier(f"osiris_upsert_{target.table}"[:63])
                # LIKE copies the column types, not the constraints: the temp table takes duplicates
                # and NULLs as they come, the INSERT below is where the real table's rules apply.
                cursor.execute(f"CREATE TEMP TABLE {staging} (LIKE {target.qualified}) ON COMMIT DROP")
                rows = _copy(cursor, staging, column_list, batches, on_progress)
                cursor.execute(_upsert_sql(target.qualified, staging, columns, primary_key))
    return CopyResult(rows=rows, mode=mode)


def _upsert_sql(table: str, staging: str, columns: Sequence[str], primary_key: Sequence[str]) -> str:
    column_list = ", ".join(quote_identifier(c) for c in columns)
    key = ", ".join(quote_identifier(c) for c in primary_key)
    updates = [f"{quote_identifier(c)} = EXCLUDED.{quote_identifier(c)}" for c in columns if c not in primary_key]
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    return f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {staging} ON CONFLICT ({key}) {action}"


def _copy(
    cursor: psycopg.Cursor,
    table: str,
    column_list: str,
    batches: Iterable[pa.RecordBatch],
    on_progress: Callable[[int], None] | None,
) -> int:
    rows = 0
    with cursor.copy(f"COPY {table} ({column_list}) FROM STDIN (FORMAT csv)") as copy:
        for chunk, count in _csv_chunks(batches):
            copy.write(chunk)
            rows += count
            if on_progress is not None:
                on_progress(rows)
    return rows


def _csv_chunks(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[bytes, int]]:
    for batch in batches:
        if batch.num_rows == 0:
            continue
        buffer = io.BytesIO()
        pa_csv.write_csv(_csv_ready(batch), buffer, _CSV_OPTIONS)
        yield buffer.getvalue(), batch.num_rows


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Columns Arrow's CSV writer cannot render as Postgres input, rendered here as text."""
    arrays = list(batch.columns)
    changed = False
    for i, field in enumerate(batch.schema):
        text = _as_postgres_text(arrays[i], field.type)
        if text is not None:
            arrays[i] = text
            changed = True
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names) if changed else batch


def _as_postgres_text(array: pa.Array, arrow_type: pa.DataType) -> pa.Array | None:
    if pa.types.is_dictionary(arrow_type):
        return _as_postgres_text(array.dictionary_decode(), arrow_type.value_type) or array.dictionary_decode()
    if (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
    ):
        # bytea hex input; Arrow would write the raw bytes (and refuse non-UTF-8 ones).
        return pa.array([None if v is None else "\\x" + v.hex() for v in array.to_pylist()], pa.string())
    if pa.types.is_duration(arrow_type):
        unit = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "microseconds"}[arrow_type.unit]
        values = pc.cast(array, pa.int64())
        if arrow_type.unit == "ns":
            values = pc.divide(values, 1000)  # Postgres intervals stop at microseconds
        return pc.binary_join_element_wise(pc.cast(values, pa.string()), pa.scalar(unit), " ")
    if pa.types.is_nested(arrow_type):
        return pa.array([None if v is None else json.dumps(v, default=str) for v in array.to_pylist()], pa.string())
    return None
