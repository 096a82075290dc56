"""Reading a PostgreSQL query result as text batches through psycopg's text protocol.

The server formats every value with its type's output function and psycopg hands the text over
unparsed (``formats.postgres_text``), so the staged cells are exactly what
``COPY (query) TO STDOUT (FORMAT csv)`` writes. Rows come from a server-side (named) cursor in
``batch_rows`` chunks, so memory stays at one batch. Column SQL types are PostgreSQL's own
``format_type`` of each result column's type OID and modifier.

Whatever the URL's driver (``postgresql+psycopg2://``, ``postgresql+psycopg://``), psycopg 3 reads:
it is the driver this package pins, and its loaders can be swapped for plain text ones.

Deliberately not here: URL policy and password scrubbing (``sources.sql_extract``), CSV.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from sqlalchemy.engine import URL

from osiris_dagster.formats.postgres_text import TYPE_NAMES_SQL, use_text_loaders
from osiris_dagster.sources.errors import SourceError

__all__ = ["postgres_batches"]


def _conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_batches(url: URL, query: str, batch_rows: int) -> tuple[list[tuple[str, str]], Iterator[pa.RecordBatch]]:
    import psycopg

    try:
        connection = psycopg.connect(_conninfo(url), connect_timeout=10)
    except psycopg.Error as exc:
        raise SourceError(f"cannot connect to PostgreSQL at {url.host}:{url.port or 5432}: {exc}") from None
    try:
        use_text_loaders(connection.adapters)
        cursor = connection.cursor(name=f"osiris_{uuid.uuid4().hex[:12]}")
        cursor.itersize = batch_rows
        cursor.execute(query)
        description = cursor.description
        if not description:
            raise SourceError("the query returns no result set")
        result = cursor.pgresult
        assert result is not None
        oids = [column.type_code for column in description]
        mods = [result.fmod(i) for i in range(len(description))]
        with connection.cursor() as names_cursor:
            sql_types = [row[0] for row in names_cursor.execute(TYPE_NAMES_SQL, [oids, mods]).fetchall()]
    except psycopg.Error as exc:
        connection.close()
        raise SourceError(f"query failed: {exc}") from None
    except BaseException:
        connection.close()
        raise
    described = [(column.name, sql) for column, sql in zip(description, sql_types, strict=True)]
    return described, _batches(connection, cursor, [name for name, _ in described], batch_rows)


def _batches(connection: Any, cursor: Any, names: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    import psycopg

    schema = pa.schema([pa.field(name, pa.string()) for name in names])
    try:
        while rows := cursor.fetchmany(batch_rows):
            arrays = [pa.array(values, pa.string()) for values in zip(*rows, strict=True)]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except psycopg.Error as exc:
        raise SourceError(f"query failed: {exc}") from None
    finally:
        connection.close()
