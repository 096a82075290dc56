"""Extracting a SQL query result into a staged text table (the extracted-table asset).

A ``read`` step calls ``extract_to_staging``; the ``write`` step re-opens the staged file with
``open_staged`` / ``iter_staged_batches``. Memory stays at about one batch whatever the table
size: rows arrive in batches and each batch is appended to the staged file before the next.

The design decision (issue 10, "lossless values"): the **source database produces the text** of
every value and the product carries that text, instead of parsing into typed Arrow values and
re-formatting them. A typed round trip had to re-implement every server's output rules and got
them wrong (zero dates became NULL, ``DECIMAL(65,30)`` came out as ``-1E-30``, PostgreSQL
``infinity`` and ``24:00:00`` aborted runs, intervals and jsonb changed value). Carrying text is
lossless by construction and checked cell by cell against the databases' own text
(tests/sources/test_conformance_*.py). It is also faster: the server formats values while the
client only moves bytes (measurements in README "Performance").

Per dialect (each dialect's text rules are in ``formats``; the readers in ``sources``):

* **MySQL/MariaDB** (``mysql://``, ``mysql+pymysql://``, ``mariadb...``): ``sources.mysql_reader``,
  the text protocol's rows split into Arrow by the product's C row reader (pymysql, raw text, as
  the generic path);
* **PostgreSQL**: ``sources.postgres_reader``, psycopg's text protocol (``COPY ... TO STDOUT`` text);
* **SQLite and any other SQLAlchemy URL**: a server-side cursor (``stream_results=True``) read with
  ``fetchmany(batch_rows)``; values as stored (``formats.python_text``). A SQLite column's SQL type
  is its declared type when the query is table-like (``SELECT * | col, ... FROM <one table>``
  optionally followed by WHERE / ORDER BY / LIMIT), else the storage class of its first value.

Every staged column is text with its SQL type as field metadata (``staging.text_schema``).

Errors are ``SourceError`` whose message never contains the URL's password, raised ``from None``
so a driver's original message (which may echo a connection string) does not ride along.

Deliberately not here: connection profiles and secrets policy (callers pass a resolved URL),
retries, CSV or any other output format, Dagster.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from osiris_dagster.arrow_memory import use_streaming_memory_pool
from osiris_dagster.formats.python_text import storage_class, value_text
from osiris_dagster.sources.errors import SourceError
from osiris_dagster.sources.source_url import SourceURL, source_url, sqlalchemy_url
from osiris_dagster.staging import (
    BatchConsumer,
    ExtractedTable,
    StagedBatch,
    open_staged,
    staged_file,
    text_schema,
)

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import URL

__all__ = ["SourceError", "extract_to_staging"]


_log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def extract_to_staging(
    url: URL | str,
    query: str,
    target: Path,
    *,
    batch_rows: int = 100_000,
    progress: Progress | None = None,
    log: logging.Logger | None = None,
    consumers: Sequence[Callable[[pa.Schema], BatchConsumer]] = (),
) -> ExtractedTable:
    """Run ``query`` against ``url`` and stage the result at ``target`` (atomically).

    ``progress(rows_so_far)`` is called after every staged batch; ``log`` receives the one line
    a MySQL read leaves when the C row reader is not built. Each of ``consumers`` is made with the staged schema,
    is told where every batch lies in the staged file as soon as it is written (``put``), and
    gets ``finish(table)`` once the staged file is complete (``abandon()`` if the extraction fails).
    """
    use_streaming_memory_pool()
    url = source_url(url)  # SQLAlchemy is imported only by the readers that need it
    target = Path(target)
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    query = _strip_statement(query)
    backend = url.get_backend_name()
    sinks = _Sinks(consumers)
    try:
        if backend in ("mysql", "mariadb"):
            from osiris_dagster.sources.mysql_reader import mysql_batches

            columns, batches = mysql_batches(url, query, batch_rows, log or _log)
            _stage(target, text_schema(columns, "mysql"), batches, progress, sinks)
        elif backend == "postgresql":
            from osiris_dagster.sources.postgres_reader import postgres_batches

            columns, batches = postgres_batches(sqlalchemy_url(url), query, batch_rows)
            _stage(target, text_schema(columns, "postgresql"), batches, progress, sinks)
        else:
            _extract_generic(sqlalchemy_url(url), query, target, batch_rows, progress, sinks)
        table = open_staged(target)
    except BaseException as exc:
        sinks.abandon()
        if isinstance(exc, OSError | KeyboardInterrupt | SystemExit | GeneratorExit):
            raise  # OSError: the staging side (disk full, permissions), not the source's fault
        if isinstance(exc, SourceError):
            raise SourceError(_scrub(str(exc), url)) from None
        # Driver errors.
        raise SourceError(_scrub(f"{type(exc).__name__}: {exc}", url)) from None
    sinks.finish(table)
    return table


class _Sinks:
    """The consumers of one extraction, made once the staged schema is known."""

    def __init__(self, factories: Sequence[Callable[[pa.Schema], BatchConsumer]]) -> None:
        self.factories = factories
        self.consumers: list[BatchConsumer] = []

    def start(self, schema: pa.Schema) -> None:
        self.consumers = [make(schema) for make in self.factories]

    def put(self, where: StagedBatch) -> None:
        for consumer in self.consumers:
            consumer.put(where)

    def finish(self, table: ExtractedTable) -> None:
        for consumer in self.consumers:
            consumer.finish(table)

    def abandon(self) -> None:
        for consumer in self.consumers:
            consumer.abandon()


def _stage(
    target: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch], progress: Progress | None, sinks: _Sinks
) -> None:
    rows = 0
    sinks.start(schema)
    try:
        with staged_file(target, schema) as staged:
            for batch in batches:
                where = staged.write(_with_schema(batch, schema))
                if where is not None:
                    sinks.put(where)
                rows += batch.num_rows
                if progress is not None:
                    progress(rows)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _with_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _strip_statement(query: str) -> str:
    return query.strip().rstrip(";").rstrip()


# --------------------------------------------------------------------------------------------
# Generic path: SQLAlchemy server-side cursor + fetchmany (SQLite and any other driver)


def _extract_generic(
    url: URL, query: str, target: Path, batch_rows: int, progress: Progress | None, sinks: _Sinks
) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            declared = _sqlite_declared_types(connection, query) if url.get_backend_name() == "sqlite" else {}
            streaming = connection.execution_options(stream_results=True)
            # exec_driver_sql: the query is the user's SQL verbatim (text() would treat ":name" as a
            # bind parameter).
            result = streaming.exec_driver_sql(query)
            description = result.cursor.description if result.cursor is not None else None
            if not description:
                raise SourceError("the query returns no result set")
            names = [d[0] for d in description]
            rows = result.fetchmany(batch_rows)
            sql_types = [declared.get(name.lower()) or _first_storage_class(rows, i) for i, name in enumerate(names)]
            schema = text_schema(list(zip(names, sql_types, strict=True)), url.get_backend_name())

            def batches() -> Iterator[pa.RecordBatch]:
                chunk = rows
                while chunk:
                    yield _rows_to_batch(chunk, schema)
                    chunk = result.fetchmany(batch_rows)

            _stage(target, schema, batches(), progress, sinks)
    except sa.exc.DBAPIError as exc:
        raise SourceError(f"query failed: {exc.orig}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"query failed: {exc}") from None
    finally:
        engine.dispose()


def _rows_to_batch(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.RecordBatch:
    arrays = [pa.array([value_text(v) for v in values], pa.string()) for values in zip(*rows, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _first_storage_class(rows: Sequence[Sequence[Any]], index: int) -> str:
    for row in rows:
        if row[index] is not None:
            return storage_class(row[index])
    return "TEXT"


_IDENT = r'(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|\w+)'
_SQLITE_TABLE_LIKE = re.compile(
    rf"\s*SELECT\s+(?P<columns>\*|{_IDENT}(?:\s*,\s*{_IDENT})*)\s+FROM\s+(?P<table>{_IDENT})"
    r"(?:\s+(?:WHERE|ORDER\s+BY|LIMIT)\b.*)?\s*;?\s*",
    re.IGNORECASE | re.DOTALL,
)


def _sqlite_declared_types(connection: sa.Connection, query: str) -> dict[str, str]:
    """Declared types (lower-cased column name -> type) when ``query`` is table-like, else {}."""
    match = _SQLITE_TABLE_LIKE.fullmatch(query)
    if not match:
        return {}
    table = match.group("table").strip('"`[]')
    escaped = table.replace('"', '""')
    info = connection.exec_driver_sql(f'PRAGMA table_info("{escaped}")').fetchall()
    # PRAGMA table_info rows: (cid, name, type, notnull, dflt_value, pk)
    return {row[1].lower(): row[2] for row in info if row[2]}


def _scrub(message: str, url: URL | SourceURL) -> str:
    password = url.password
    if not password:
        return message
    for form in {password, urllib.parse.quote(password, safe=""), urllib.parse.quote_plus(password)}:
        if form:
            message = message.replace(form, "***")
    return message
