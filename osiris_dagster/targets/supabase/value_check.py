"""Values a Postgres table cannot take, found before they are sent, with the row that holds them.

The staged text of every cell is loaded through the target column's input function, so almost
every source value reads back equal (tests/supabase/test_corpus_roundtrip.py). A few values a
source database stores are not values in Postgres at all:

* MySQL/MariaDB zero and partial-zero dates (``0000-00-00``, ``2024-02-00``,
  ``0000-00-00 00:00:00.000``) in a DATE / DATETIME / TIMESTAMP column;
* a NUL character in text (MySQL allows it, Postgres text cannot hold it);
* over REST only: a JSON ``null`` in a PostgreSQL ``json``/``jsonb`` column, which PostgREST
  stores as SQL NULL (a different value); the direct transport (COPY) carries it.

Postgres would reject them too, but with "line 8123 of COPY" or an HTTP 400 for a batch. Here the
write fails instead with the table, the row's primary key (or its position when the write has
no key) and the column, before anything is sent, so nothing is silently changed and the user
can fix the source or the query (``NULLIF(d, '0000-00-00')``). The check is vectorised
(pyarrow.compute regex per column) and runs on text columns only.

Deliberately not here: type mapping (``postgres_ddl``), the transports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["UnloadableValueError", "checked_batches"]

_ZERO_DATE = r"^\d{4}-(00-\d\d|\d\d-00)|^0000-"
_MYSQL_DATE_TYPES = ("DATE", "DATETIME", "TIMESTAMP")


class UnloadableValueError(ValueError):
    """A staged value the target cannot store; the message names table, row and column."""


def checked_batches(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, table: str, key: Sequence[str], *, rest: bool = False
) -> Iterator[pa.RecordBatch]:
    from osiris_dagster.staging import source_dialect, sql_type

    mysql = source_dialect(schema) in ("mysql", "mariadb")
    postgres = source_dialect(schema) == "postgresql"
    rules: list[tuple[int, str, str]] = []  # (column index, regex, why)
    for index, field in enumerate(schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        rules.append((index, "\x00", "text with a NUL character, which Postgres text cannot hold"))
        if mysql and sql_type(field).upper().split("(")[0] in _MYSQL_DATE_TYPES:
            rules.append((index, _ZERO_DATE, f"a MySQL zero date, which Postgres {sql_type(field)} cannot hold"))
        if rest and postgres and sql_type(field) in ("json", "jsonb"):
            why = "a JSON null, which the REST API would store as SQL NULL (use the direct transport: pg_dsn)"
            rules.append((index, r"^\s*null\s*$", why))
    offset = 0
    for batch in batches:
        for index, pattern, why in rules:
            column = batch.column(index)
            hits = (
                pc.match_substring(column, pattern) if pattern == "\x00" else pc.match_substring_regex(column, pattern)
            )
            if pc.any(hits).as_py():
                row = pc.index(hits, True).as_py()
                raise UnloadableValueError(_message(batch, row, offset, index, table, key, why))
        offset += batch.num_rows
        yield batch


def _message(batch: pa.RecordBatch, row: int, offset: int, index: int, table: str, key: Sequence[str], why: str) -> str:
    name = batch.schema.field(index).name
    value = batch.column(index)[row].as_py()
    if key:
        where = "row " + ", ".join(f"{k}={batch.column(k)[row].as_py()}" for k in key)
    else:
        where = f"row {offset + row + 1} (the write has no primary_key)"
    return (
        f"{table}: {where}, column {name!r}: value {value[:40]!r} is {why}; "
        "change it in the source or in the step's query (e.g. NULLIF)"
    )
