"""A PostgREST-compatible HTTP server for tests, backed by a real PostgreSQL database.

No PostgREST binary can be installed here, so this implements the slice of PostgREST's API that
supabase-py 2.34.1 sends for ``insert`` / ``upsert`` / ``delete`` / ``select`` on
``/rest/v1/<table>``, with PostgREST's semantics:

* auth: ``apikey`` and ``Authorization: Bearer`` must carry the service key, else 401 with a JSON
  error (as Supabase's gateway answers a wrong key);
* schema from ``Accept-Profile`` (GET/DELETE) / ``Content-Profile`` (POST);
* POST: a JSON array of rows, ``columns=`` (which keys to take; missing ones become NULL, as
  ``default_to_null`` asks), ``on_conflict=``, ``Prefer: return=minimal|representation,
  resolution=merge-duplicates|ignore-duplicates``; rows are converted by Postgres itself
  (``json_populate_recordset`` over the table's row type, the way PostgREST does it), and each
  request is ONE transaction;
* filters ``col=eq.v``, ``col=in.(a,b)``, ``or=(and(a.eq.1,b.eq.2),...)`` with PostgREST quoting;
  ``select=``, ``order=col.asc``, ``limit=``, ``offset=``;
* errors: missing table 404 (``PGRST205``), unique violation 409, other SQL errors 400, each with
  ``{code, message, details, hint}``.

Fault injection (``server.faults``): answer the next N requests with a status (503, 429 with
``Retry-After``), or drop the connection after the request was processed and committed, which is
the case that makes a naive retry duplicate rows. Every request is recorded in ``server.requests``.

Deliberately not here: anything else PostgREST does (RPC, embedding, PATCH, JWT claims, RLS).
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["Fault", "PostgrestServer", "RecordedRequest"]


@dataclass
class Fault:
    """What to do to one upcoming request instead of (or after) serving it."""

    status: int | None = None  # answer with this status without touching the database
    retry_after: str | None = None
    drop_after_commit: bool = False  # serve it, commit, then close the socket without answering
    methods: tuple[str, ...] = ("POST", "DELETE", "GET")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int | None  # None: dropped
    body_rows: int = 0


@dataclass
class _State:
    conninfo: str
    key: str
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "details": details, "hint": hint}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read server.requests instead of stderr

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # -------------------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = RecordedRequest(method, parsed.path, query, {k.lower(): v for k, v in self.headers.items()}, None)
        with self.state.lock:
            self.state.requests.append(record)
            fault = next((f for f in self.state.faults if method in f.methods), None)
            if fault is not None:
                self.state.faults.remove(fault)
        if not self._authorized():
            self._answer(record, 401, {"message": "Invalid API key", "hint": "Double check your service_role key."})
            return
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._answer(record, fault.status, {"code": str(fault.status), "message": "injected fault"}, headers)
            return
        try:
            status, payload, extra = self._dispatch(method, parsed.path, query, body, record)
        except _ApiError as error:
            self._answer(record, error.status, error.body)
            return
        if fault is not None and fault.drop_after_commit:
            # The work is committed; the client never learns it. Its retry must not duplicate rows.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._answer(record, status, payload, extra)

    def _authorized(self) -> bool:
        key = self.state.key
        return self.headers.get("apikey") == key and self.headers.get("Authorization") == f"Bearer {key}"

    def _answer(
        self, record: RecordedRequest, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        record.status = status
        data = b"" if payload is None else json.dumps(payload, default=str).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, record: RecordedRequest
    ) -> tuple[int, Any, dict[str, str]]:
        prefix = "/rest/v1/"
        if not path.startswith(prefix) or "/" in path[len(prefix) :]:
            raise _ApiError(404, "PGRST125", f"invalid path {path}")
        table = urllib.parse.unquote(path[len(prefix) :])
        profile = self.headers.get("Content-Profile" if method == "POST" else "Accept-Profile") or "public"
        prefer = _prefer(self.headers.get("Prefer", ""))
        try:
            with psycopg.connect(self.state.conninfo) as connection:
                target = _table(connection, profile, table)
                if method == "POST":
                    rows = json.loads(body or b"[]")
                    rows = [rows] if isinstance(rows, dict) else rows
                    record.body_rows = len(rows)
                    return _insert(connection, target, rows, query, prefer)
                if method == "DELETE":
                    return _delete(connection, target, query, prefer)
                return _select(connection, target, query)
        except psycopg.errors.UniqueViolation as error:
            raise _ApiError(409, "23505", str(error).splitlines()[0], _detail(error)) from None
        except psycopg.Error as error:
            raise _ApiError(400, error.sqlstate or "XX000", str(error).splitlines()[0], _detail(error)) from None


def _detail(error: psycopg.Error) -> str | None:
    return error.diag.message_detail if error.diag else None


def _prefer(header: str) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            prefs[name] = value
    return prefs


@dataclass(frozen=True)
class _Table:
    schema: str
    name: str
    columns: list[str]
    primary_key: list[str]

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)


def _table(connection: psycopg.Connection, schema: str, name: str) -> _Table:
    row = connection.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v')",
        [schema, name],
    ).fetchone()
    if row is None:
        raise _ApiError(404, "PGRST205", f"Could not find the table '{schema}.{name}' in the schema cache", None, None)
    columns = [
        r[0]
        for r in connection.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [row[0]],
        )
    ]
    key = [
        r[0]
        for r in connection.execute(
            "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n",
            [row[0]],
        )
    ]
    return _Table(schema, name, columns, key)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and double quotes (PostgREST's list syntax)."""
    parts, depth, quoted, escaped, current = [], 0, False, False, []
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
            continue
        if ch == "\\" and quoted:
            current.append(ch)
            escaped = True
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p != ""]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner, out, i = value[1:-1], [], 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                i += 1
            out.append(inner[i])
            i += 1
        return "".join(out)
    return value


def _column(table: _Table, name: str) -> sql.Composable:
    name = _unquote(name.strip())
    if name not in table.columns:
        raise _ApiError(400, "42703", f"column {table.name}.{name} does not exist")
    return sql.Identifier(name)


def _condition(table: _Table, column: str, operation: str) -> tuple[sql.Composable, list[Any]]:
    """``col`` + ``op.value`` -> SQL; values stay text, Postgres casts them to the column's type."""
    negate = operation.startswith("not.")
    if negate:
        operation = operation[4:]
    op, _, value = operation.partition(".")
    ident = _column(table, column)
    if op == "eq":
        clause, params = (sql.SQL("{} = {}").format(ident, sql.Placeholder()), [_unquote(value)])
    elif op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise _ApiError(400, "PGRST100", f"bad in filter: {value}")
        items = [_unquote(v) for v in _split_top_level(value[1:-1])]
        if not items:
            return (sql.SQL("false") if not negate else sql.SQL("true")), []
        clause = sql.SQL("{} IN ({})").format(ident, sql.SQL(", ").join(sql.Placeholder() * len(items)))
        params = items
    elif op == "is" and value == "null":
        clause, params = sql.SQL("{} IS NULL").format(ident), []
    else:
        raise _ApiError(400, "PGRST100", f"operator {op} is not supported by the test server")
    return (sql.SQL("NOT ({})").format(clause) if negate else clause), params


def _logic(table: _Table, kind: str, inner: str) -> tuple[sql.Composable, list[Any]]:
    clauses, params = [], []
    for term in _split_top_level(inner):
        if term.startswith(("and(", "or(")):
            sub_kind, _, rest = term.partition("(")
            clause, sub = _logic(table, sub_kind, rest[:-1])
        else:
            column, _, operation = term.partition(".")
            clause, sub = _condition(table, column, operation)
        clauses.append(clause)
        params.extend(sub)
    joiner = sql.SQL(" AND " if kind == "and" else " OR ")
    return sql.SQL("(") + joiner.join(clauses) + sql.SQL(")"), params


_RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict"}


def _where(table: _Table, query: dict[str, list[str]]) -> tuple[sql.Composable, list[Any]]:
    clauses, params = [], []
    for name, values in query.items():
        if name in _RESERVED:
            continue
        for value in values:
            if name in ("or", "and"):
                clause, sub = _logic(table, name, value[1:-1])
            else:
                clause, sub = _condition(table, name, value)
            clauses.append(clause)
            params.extend(sub)
    if not clauses:
        return sql.SQL(""), []
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params


def _insert(
    connection: psycopg.Connection, table: _Table, rows: list[dict[str, Any]], query: dict[str, list[str]], prefer: dict
) -> tuple[int, Any, dict[str, str]]:
    if "columns" in query:
        names = [_unquote(c) for c in _split_top_level(query["columns"][0])]
    else:
        names = sorted({k for row in rows for k in row})
    columns = [_column(table, n) for n in names]
    column_list = sql.SQL(", ").join(columns)
    statement = sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM json_populate_recordset(NULL::{t}, %s::json)").format(
        t=table.ident, c=column_list
    )
    resolution = prefer.get("resolution")
    if resolution in ("merge-duplicates", "ignore-duplicates"):
        conflict = [_unquote(c) for c in query["on_conflict"][0].split(",")] if "on_conflict" in query else None
        conflict = conflict or table.primary_key
        target = sql.SQL(", ").join(_column(table, c) for c in conflict)
        updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names if n not in conflict]
        if resolution == "merge-duplicates" and updates:
            statement += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(target, sql.SQL(", ").join(updates))
        else:
            statement += sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(target)
    representation = prefer.get("return") == "representation"
    if representation:
        statement += sql.SQL(" RETURNING row_to_json({}.*)").format(table.ident)
    with connection.cursor() as cursor:
        cursor.execute(statement, [json.dumps(rows)])
        data = [r[0] for r in cursor.fetchall()] if representation else None
    return 201, data, {}


def _delete(
    connection: psycopg.Connection, table: _Table, query: dict[str, list[str]], prefer: dict
) -> tuple[int, Any, dict[str, str]]:
    where, params = _where(table, query)
    if not params and not where.as_string(connection):
        # PostgREST (with its safeupdate default on Supabase) refuses a DELETE without a filter.
        raise _ApiError(400, "21000", "DELETE requires a WHERE clause")
    statement = sql.SQL("DELETE FROM {}").format(table.ident) + where
    if prefer.get("return") == "representation":
        statement += sql.SQL(" RETURNING row_to_json({}.*)").format(table.ident)
        rows = [r[0] for r in connection.execute(statement, params).fetchall()]
        return 200, rows, {}
    connection.execute(statement, params)
    return 204, None, {}


def _select(
    connection: psycopg.Connection, table: _Table, query: dict[str, list[str]]
) -> tuple[int, Any, dict[str, str]]:
    select = query.get("select", ["*"])[0]
    columns = sql.SQL("*") if select == "*" else sql.SQL(", ").join(_column(table, c) for c in _split_top_level(select))
    where, params = _where(table, query)
    statement = sql.SQL("SELECT {} FROM {}").format(columns, table.ident) + where
    if "order" in query:
        terms = []
        for term in query["order"][0].split(","):
            name, _, direction = term.partition(".")
            terms.append(_column(table, name) + sql.SQL(" DESC" if direction.startswith("desc") else " ASC"))
        statement += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)
    if "limit" in query:
        statement += sql.SQL(" LIMIT {}").format(sql.Literal(int(query["limit"][0])))
    if "offset" in query:
        statement += sql.SQL(" OFFSET {}").format(sql.Literal(int(query["offset"][0])))
    wrapped = sql.SQL("SELECT coalesce(json_agg(row_to_json(q)), '[]'::json) FROM ({}) AS q").format(statement)
    rows = connection.execute(wrapped, params).fetchone()[0]  # type: ignore[index]
    return 200, rows, {"Content-Range": f"0-{max(len(rows) - 1, 0)}/*"}


class PostgrestServer:
    """``with PostgrestServer(conninfo, key) as server: server.url`` -> ``http://127.0.0.1:<port>``."""

    def __init__(self, conninfo: str, key: str) -> None:
        self.state = _State(conninfo=conninfo, key=key)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="postgrest-test-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def faults(self) -> list[Fault]:
        return self.state.faults

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.state.requests

    def start(self) -> PostgrestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> PostgrestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Run the server standalone: ``python tests/supabase/postgrest_server.py CONNINFO KEY`` (prints its URL)."""
    import sys
    import time

    server = PostgrestServer(sys.argv[1], sys.argv[2]).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
