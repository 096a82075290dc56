"""A cheap fingerprint of the source a read step extracts: "has it changed since last time?".

The rule (one per source, computed server-side; no rows travel):

* **MySQL / MariaDB, and the step reads one table** (``table:``, or a query of the form
  ``SELECT ... FROM <table> [WHERE ...] [ORDER BY ...] [LIMIT ...]``): ``CHECKSUM TABLE <table>``.
  It sees inserts, deletes *and* in-place updates; the server reads the table once per
  evaluation, but sends back a single number.
* **Anything else** (SQLite, PostgreSQL, any SQLAlchemy URL, or a MySQL query over several
  tables): ``SELECT COUNT(*), MAX(<column>) FROM <table or (query)>``, where ``<column>`` is the
  step's incremental cursor when it has one, else the first column of the source. It sees inserts
  and deletes, and updates that move the maximum; an in-place update of another row is not seen.

A fingerprint is an opaque string; only equality matters. Deliberately not here: Dagster, the
sensor cursor, connection profiles (callers pass a resolved URL).
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from osiris_dagster.sources.mysql_options import MySQLOptions

# A query that reads exactly one table (the whole table, or a filtered/ordered/limited part of it).
_ONE_TABLE_QUERY = re.compile(
    r"""^\s*select\s+(?:\*|[\w\s,.`"]+?)\s+from\s+([A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)?)\s*
        (?:(?:where|order\s+by|limit)\b(?:(?!\b(?:join|union|from)\b).)*)?;?\s*$""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)


def source_table(table: str | None, query: str | None) -> str | None:
    """The one table a step reads, when that can be told from its config; else None."""
    if table:
        return table
    match = _ONE_TABLE_QUERY.match(query or "")
    return match.group(1) if match else None


def source_fingerprint(url: URL, *, table: str | None, query: str | None, column: str | None = None) -> str:
    """The fingerprint of a read step's source (see the module docstring for the rule)."""
    connect_args: dict[str, object] = {}
    if url.get_backend_name() in ("mysql", "mariadb"):
        # The reader's options, applied as the reader applies them (SQLAlchemy's own reading of
        # ``ssl_*`` query keys differs: it would drop ``ssl_ca`` next to a verify flag).
        connect_args = MySQLOptions.of(url.query).pymysql_args()
        url = url.set(query={})
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    preparer = engine.dialect.identifier_preparer
    one_table = source_table(table, query)
    quoted_table = ".".join(preparer.quote(part) for part in one_table.split(".")) if one_table else None
    try:
        with engine.connect() as connection:
            if url.get_backend_name() in ("mysql", "mariadb") and quoted_table:
                row = connection.exec_driver_sql(f"CHECKSUM TABLE {quoted_table}").one()
                if row[1] is None:
                    raise LookupError(f"table {one_table} not found")
                return f"checksum:{row[1]}"
            source = quoted_table or f"({query}) AS osiris_fp"
            if column is None:
                column = next(iter(connection.exec_driver_sql(f"SELECT * FROM {source} LIMIT 0").keys()))
            row = connection.exec_driver_sql(f"SELECT COUNT(*), MAX({preparer.quote(column)}) FROM {source}").one()
            return f"count:{row[0]};max:{row[1]!r}"
    finally:
        engine.dispose()
