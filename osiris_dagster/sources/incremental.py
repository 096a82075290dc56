"""Incremental extraction: the cursor value, the wrapped query, and the cursor range of staged rows.

A step with ``incremental: {cursor: <column>}`` reads only rows whose cursor is greater than
the last committed cursor value:

    SELECT * FROM (<query>) AS osiris_inc WHERE <cursor> > <literal> ORDER BY <cursor>

The identifier is quoted and the literal rendered by the source's own SQLAlchemy dialect
(``literal_binds``), never concatenated from text; the first run (nothing committed yet) reads
everything, ordered by the cursor. The cursor must grow strictly with every new row (an
auto-increment id, an insertion timestamp with enough resolution): a row that arrives later with
a cursor value not greater than one already committed is never read.

Staged cells are the source's text (``staging``), so cursor values are read back into typed values
from that text and the column's source SQL type (``cursor_values``): integers as ``int``,
DECIMAL/NUMERIC as ``Decimal``, DATE as ``date``, DATETIME/TIMESTAMP as ``datetime``, anything else
as text. The server compares cursors in their real type (the WHERE clause above); the writer's
own filter (``rows_after``) compares the same typed values.

Cursor values travel through Dagster metadata as small JSON objects ``{"type": ..., "value": ...}``
(`encode_cursor` / `decode_cursor`) so an int stays an int and a datetime a datetime.

Deliberately not here: where the committed cursor comes from (Dagster's storage, see
`components.incremental`), and the CSV side (`targets.csv_append`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

CursorValue = int | float | str | decimal.Decimal | dt.datetime | dt.date

_TYPES: dict[str, tuple[type, Any, Any]] = {
    # name: (python type, to JSON, from JSON); datetime before date (a datetime is a date)
    "int": (int, int, int),
    "float": (float, float, float),
    "decimal": (decimal.Decimal, str, decimal.Decimal),
    "datetime": (dt.datetime, dt.datetime.isoformat, dt.datetime.fromisoformat),
    "date": (dt.date, dt.date.isoformat, dt.date.fromisoformat),
    "str": (str, str, str),
}


def encode_cursor(value: CursorValue | None) -> str | None:
    """A cursor value as JSON text (for metadata), or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a boolean column cannot be an incremental cursor")
    for name, (python_type, to_json, _) in _TYPES.items():
        if isinstance(value, python_type):
            return json.dumps({"type": name, "value": to_json(value)})
    raise TypeError(f"a {type(value).__name__} column cannot be an incremental cursor")


def decode_cursor(text: str | None) -> CursorValue | None:
    if not text:
        return None
    data = json.loads(text)
    return _TYPES[data["type"]][2](data["value"])


def show_cursor(value: CursorValue | None) -> str:
    """How a cursor value reads in the UI ("(start)" before the first committed value)."""
    return "(start)" if value is None else str(value)


def incremental_query(url: URL, query: str, cursor: str, after: CursorValue | None) -> str:
    """``query`` restricted to rows with ``cursor > after`` (all rows when ``after`` is None), ordered by it."""
    dialect = url.get_dialect()()
    column = dialect.identifier_preparer.quote(cursor)
    inner = query.strip().rstrip(";").strip()
    where = ""
    if after is not None:
        literal = sa.literal(after).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        where = f" WHERE {column} > {literal}"
    return f"SELECT * FROM ({inner}) AS osiris_inc{where} ORDER BY {column}"


def staged_cursor_max(path: Path, cursor: str) -> CursorValue | None:
    """The largest cursor value in a staged table (None when it has no rows)."""
    from osiris_dagster.staging import iter_staged_batches

    return batches_cursor_max(iter_staged_batches(path), cursor)


def batches_cursor_max(batches: Iterable[Any], cursor: str) -> CursorValue | None:
    best: Any = None
    for batch in batches:
        if batch.num_rows:
            for value in cursor_values(batch, cursor):
                if value is not None and (best is None or value > best):
                    best = value
    return best


def rows_after(batches: Iterable[Any], cursor: str, after: CursorValue | None) -> Iterable[Any]:
    """Only the rows with ``cursor > after``: what a writer has not committed yet."""
    import pyarrow as pa

    for batch in batches:
        if after is None:
            yield batch
            continue
        keep = [value is not None and value > after for value in cursor_values(batch, cursor)]
        yield batch.filter(pa.array(keep, pa.bool_()))


_INTEGER = re.compile(
    r"\b(TINYINT|SMALLINT|MEDIUMINT|INT|INTEGER|BIGINT|SERIAL|BIGSERIAL|SMALLSERIAL|INT2|INT4|INT8|YEAR)\b"
)
_DECIMAL = re.compile(r"\b(DECIMAL|NUMERIC|DEC|FIXED)\b")
_DATETIME = re.compile(r"\b(DATETIME|TIMESTAMP|TIMESTAMPTZ)\b")
_DATE = re.compile(r"^DATE\b")
_FLOAT = re.compile(r"\b(REAL|FLOAT|FLOAT4|FLOAT8|DOUBLE)\b")


def cursor_values(batch: Any, cursor: str) -> list[CursorValue | None]:
    """The typed values of a staged cursor column, from its text and source SQL type."""
    from osiris_dagster.staging import sql_type

    index = batch.schema.get_field_index(cursor)
    column = batch.column(index)
    if not pa_is_text(column.type):
        return column.to_pylist()  # a batch not from staging (already typed)
    parse = _parser(sql_type(batch.schema.field(index)).upper())
    return [None if text is None else parse(text) for text in column.to_pylist()]


def pa_is_text(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))


def _parser(sql: str) -> Any:
    if "[]" in sql:
        return str
    if _INTEGER.search(sql) and "INTERVAL" not in sql:
        return int
    if _DECIMAL.search(sql):
        return decimal.Decimal
    if _FLOAT.search(sql):
        return float
    if _DATETIME.search(sql):
        return _datetime
    if _DATE.search(sql):
        return dt.date.fromisoformat
    return str


def _datetime(text: str) -> dt.datetime:
    # PostgreSQL prints a whole-hour offset as "+05"; fromisoformat wants "+05:00".
    if re.search(r"[+-]\d\d$", text):
        text += ":00"
    return dt.datetime.fromisoformat(text)
