"""One relayed batch's transaction on PostgreSQL: its statements as SQL text, sent a few at a time.

`EventBatchWriter` decides what a batch writes (Dagster's rows and Dagster's effects); this module
decides how that reaches PostgreSQL. Before, each write was a SQLAlchemy statement of its own: the
demo mix of ``bench/relay.py`` (a real 99-event run relayed as many runs) made 16 round trips a
run (BEGIN, the ``asset_keys`` lock, events, tags, ``asset_keys``, planned checks, check
evaluations, run row read and write, COMMIT; then the held terminal event: BEGIN, its row, run row
read and write, COMMIT), and SQLAlchemy's compiling (its multi-row statements are compiled anew
for every row count: ~3 compiles a run) and executing cost more CPU than the psycopg2 calls they
wrap: the relaying process spent 14-17 ms of CPU a run, 8-9 ms with this module (the same
3,000 events alternated, load 2-6).

So a batch's statements are SQL text with every value quoted by the driver — psycopg2's
``mogrify`` on the batch's own connection, the quoting its ``execute`` applies to parameters, so
the values reach the server exactly as they did as parameters — and the statements of one round
trip are joined into one ``execute`` (psycopg2 sends a statement string without parameters as one
simple query, whatever it holds; the server runs its statements in order, in the transaction).
Only a statement whose answer is needed ends a round trip:

1. `claim`: lock the batch's ``asset_keys`` rows, take ids for its events from ``event_logs``'s
   sequence, read its runs' rows — one round trip, only for a batch with asset or check events
   (their effects name their event's id) or run events (their run row is read, updated, written);
2. everything else — the events with their ids, tags, ``asset_keys``, planned checks, the run
   row — goes with the statement that answers: `update_else_insert` (the check evaluations: the
   planned row each updated) or `update_if` (a run row updated on condition that it still holds
   what the writer last wrote there: the held terminal event's batch reads nothing back), or
   alone (`send`);
3. the commit, SQLAlchemy's (its ``commit`` event included).

The demo run: 4 + 3 round trips (BEGIN, claim, the rest, COMMIT; BEGIN, the event and its
conditional run row update, COMMIT). The ids: Dagster's rows take theirs from the column's sequence as
they are inserted; here the batch takes as many from the same sequence, in one statement, and
gives them to its rows in relay order — the same ids, as the rows of one session's insert take
increasing values (what SQLAlchemy's ordered ``RETURNING`` relied on as well). They are taken
after the lock, as before they were taken by the insert after it: the asset index still follows
storage order under concurrent relays (`claim`).

psycopg2 is the relay pool's driver whatever the instance's URL names (`EventBatchWriter`'s
engine): ``mogrify`` and the simple-query ``execute`` are its, and Dagster's own PostgreSQL storage
needs psycopg2 anyway (docs/deploy.md). Deliberately not done: psycopg 3's pipeline mode (its own
parameter protocol, and its own driver under Dagster's connection pool events) and server-side
prepared statements (a batch's multi-row statements differ in row count from batch to batch).
Nor a session's ``default_toast_compression = lz4``: it took 0.6 ms of the ~3 ms the server spent
inserting a demo run's 98 events (pglz compresses the ~2-5 KB texts), but it would change how the
operator's database keeps Dagster's rows.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as db
from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()
# A statement string holds no parameters: psycopg2 must not read its '%' as placeholders.
_NO_PARAMETERS = {"no_parameters": True}


def id_sequence(connection: db.Connection, table: db.Table) -> str:
    """The sequence of ``table``'s ``id`` column (one round trip: look it up once per storage)."""
    name = connection.exec_driver_sql(f"SELECT pg_get_serial_sequence('{table.name}', 'id')").scalar()
    if not name:
        raise RuntimeError(f"{table.name}.id takes no values from a sequence: not a Dagster event log table")
    return str(name)


class PostgresBatch:
    """The statements of one batch's transaction on ``connection``, sent with the next that answers."""

    def __init__(self, connection: db.Connection, event_id_sequence: str) -> None:
        self._connection = connection
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None
        self._cursor = dbapi_connection.cursor()  # for `mogrify` only: quoting needs the connection
        self._encoding = _python_encoding(dbapi_connection.encoding)
        self._event_id_sequence = event_id_sequence
        self._queued: list[str] = []

    # -- statements that answer: they send the queue ---------------------------------------------
    def claim(self, rows: list[dict[str, Any]], *, lock_keys: Sequence[str], run_ids: Sequence[str]) -> dict[str, Any]:
        """Lock ``asset_keys`` rows of ``lock_keys`` (creating missing ones), give ``rows`` (event
        rows, in relay order) their ``id``, and read the rows of ``run_ids``: ``{run_id: (run_body,
        status)}``.

        The lock comes first, in a statement of its own: an asset's row names its newest
        materialization by storage id, and is written after the events; two relays storing the same
        asset could take ids 10 and 11 and write the row in the other order, leaving it on the older
        event (seen in CI with two relays). Locked first, the second relay waits for the first's
        commit before it takes ids. In key order, as the later upsert, so two batches never wait on
        each other crosswise. SQLite needs none of this: ``BEGIN IMMEDIATE`` makes the whole batch
        one writer's.
        """
        statements = []
        if lock_keys:
            values = self._values(["asset_key"], [(key,) for key in sorted(lock_keys)])
            # A no-op update of the key itself: it takes the row lock where the row exists already.
            statements.append(
                f"INSERT INTO asset_keys (asset_key) VALUES {values}"
                " ON CONFLICT (asset_key) DO UPDATE SET asset_key = excluded.asset_key"
            )
        reads = []
        if run_ids:
            reads.append(
                self._quote(
                    "SELECT run_id, run_body, status, NULL::bigint FROM runs WHERE run_id IN %s",
                    [tuple(sorted(run_ids))],
                )
            )
        if rows:
            reads.append(
                self._quote(
                    "SELECT NULL, NULL, NULL, nextval(%s::regclass) FROM generate_series(1, %s)",
                    [self._event_id_sequence, len(rows)],
                )
            )
        if not reads:
            self._queued += statements
            return {}
        result = self._send([*statements, " UNION ALL ".join(reads)])
        ids: list[int] = []
        runs: dict[str, Any] = {}
        for run_id, run_body, status, event_id in result:
            if event_id is None:
                runs[run_id] = (run_body, status)
            else:
                ids.append(int(event_id))
        for row, event_id in zip(rows, sorted(ids), strict=True):
            row["id"] = event_id
        return runs

    def update_else_insert(
        self,
        table: db.Table,
        rows: list[dict[str, Any]],
        *,
        identity: Sequence[str],
        null_safe: Sequence[str] = (),
        try_update: Sequence[bool],
    ) -> Counter[int]:
        """Each row updates the rows of ``table`` that share its ``identity`` (and ``null_safe``
        columns, NULL matching NULL) where ``try_update`` says so, or is inserted when it updated
        none (in row order): one statement, sent with the queue. Returns how many rows each
        position updated, where that was more than one.

        The identities must be distinct: each row sees the table as it was before the statement.
        """
        columns = list(rows[0])
        given = self._values(
            ["row_position", "try_update", *columns],
            [
                (position, update, *(row[c] for c in columns))
                for position, (row, update) in enumerate(zip(rows, try_update, strict=True))
            ],
        )
        names = ", ".join(["row_position", "try_update", *columns])
        matches = " AND ".join(
            [
                "given.try_update",
                *(f"t.{c} = given.{c}" for c in identity),
                *(f"t.{c} IS NOT DISTINCT FROM given.{c}" for c in null_safe),
            ]
        )
        keys = {*identity}
        assignments = ", ".join(f"{c} = {_cast(table, 'given', c)}" for c in columns if c not in keys)
        casts = ", ".join(_cast(table, "given", c) for c in columns)
        statement = (
            f"WITH given ({names}) AS (VALUES {given}),"
            f" updated AS (UPDATE {table.name} AS t SET {assignments} FROM given WHERE {matches}"
            " RETURNING given.row_position),"
            f" inserted AS (INSERT INTO {table.name} ({', '.join(columns)}) SELECT {casts} FROM given"
            " WHERE given.row_position NOT IN (SELECT row_position FROM updated) ORDER BY given.row_position)"
            " SELECT row_position, count(*) FROM updated GROUP BY row_position HAVING count(*) > 1"
        )
        return Counter({int(position): int(count) for position, count in self._send([statement])})

    def update_if(
        self, table: db.Table, where: Mapping[str, Any], expected: Mapping[str, Any], values: Mapping[str, Any]
    ) -> bool:
        """Update the row of ``where`` if its ``expected`` columns still hold those values; sent
        with the queue: whether it did."""
        statement = self._update(table, {**where, **expected}, values)
        return bool(self._send([statement]).rowcount)

    def send(self) -> None:
        """Send what is queued (the batch's last round trip before its commit)."""
        if self._queued:
            self._send([])

    # -- statements that answer nothing: queued --------------------------------------------------
    def insert(self, table: db.Table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (all with the same columns) in order, in one statement."""
        if not rows:
            return
        columns = list(rows[0])
        values = self._values(columns, [tuple(row[c] for c in columns) for row in rows])
        self._queued.append(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values}")

    def upsert(self, table: db.Table, rows: list[dict[str, Any]], *, key: str, update: Sequence[str]) -> None:
        """Insert ``rows``; where ``key`` exists, set the ``update`` columns (none: leave the row)."""
        columns = list(rows[0])
        values = self._values(columns, [tuple(row[c] for c in columns) for row in rows])
        conflict = f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in update)}" if update else "DO NOTHING"
        self._queued.append(
            f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values} ON CONFLICT ({key}) {conflict}"
        )

    def update(self, table: db.Table, where: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        self._queued.append(self._update(table, where, values))

    # -- text ------------------------------------------------------------------------------------
    def _update(self, table: db.Table, where: Mapping[str, Any], values: Mapping[str, Any]) -> str:
        assignments = ", ".join(f"{c} = %s" for c in values)
        condition = " AND ".join(f"{c} = %s" for c in where)
        return self._quote(
            f"UPDATE {table.name} SET {assignments} WHERE {condition}", [*values.values(), *where.values()]
        )

    def _send(self, answering: list[str]) -> db.CursorResult[Any]:
        statements, self._queued = [*self._queued, *answering], []
        return self._connection.exec_driver_sql(";\n".join(statements), execution_options=_NO_PARAMETERS)

    def _quote(self, template: str, values: Sequence[Any]) -> str:
        return self._cursor.mogrify(template, values).decode(self._encoding)

    def _values(self, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> str:
        """``(v, ...), (v, ...)``: the rows of a VALUES list, quoted in one call of the driver."""
        row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        return self._quote(", ".join([row] * len(rows)), [value for values in rows for value in values])


def _cast(table: db.Table, alias: str, column: str) -> str:
    """A VALUES column as ``table``'s column type: the list's literals are text or integer until cast."""
    return f"CAST({alias}.{column} AS {_column_type(table, column)})"


@functools.cache
def _column_type(table: db.Table, column: str) -> str:
    return table.c[column].type.compile(dialect=_DIALECT)


def _python_encoding(pg_encoding: str) -> str:
    from psycopg2.extensions import encodings

    return encodings.get(pg_encoding, pg_encoding)
