"""Incremental extraction: the cursor value, the wrapped query, and the cursor range of staged rows.

A step with ``incremental: {cursor: <column>}`` reads only rows whose cursor is greater than
the last committed cursor value:

    SELECT * FROM (<query>) AS osiris_inc WHERE <cursor> > <literal> ORDER BY <cursor>

The identifier is quoted and the literal rendered by the source's own SQLAlchemy dialect
(``literal_binds``), never concatenated from text; the first run (nothing committed yet) reads
everything, ordered by the cursor. The cursor must grow strictly with every new row (an
auto-increment id, an insertion timestamp with enough resolution): a row that arrives later with
a cursor value not greater than one already committed is never read.

Cursor values travel through Dagster metadata as small JSON objects ``{"type": ..., "value": ...}``
(`encode_cursor` / `decode_cursor`) so an int stays an int and a datetime a datetime.

Deliberately not here: where the committed cursor comes from (Dagster's storage, see
`components.incremental`), and the CSV side (`targets.csv_append`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
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
    import pyarrow.compute as pc

    best: Any = None
    for batch in batches:
        if batch.num_rows:
            value = pc.max(batch.column(cursor)).as_py()
            if value is not None and (best is None or value > best):
                best = value
    return best


def rows_after(batches: Iterable[Any], cursor: str, after: CursorValue | None) -> Iterable[Any]:
    """Only the rows with ``cursor > after``: what a writer has not committed yet."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in batches:
        if after is None:
            yield batch
            continue
        column = batch.column(cursor)
        keep = pc.fill_null(pc.greater(column, pa.scalar(after, type=column.type)), False)
        yield batch.filter(keep)
