"""Reading a MySQL/MariaDB query result as text batches: connectorx fast path, pymysql generic path.

Both paths stage the same bytes: every cell is the server's own text for the value
(``formats.mysql_text``), and neither parses or formats a value in Python.

1. The result's field packets are read first (the query wrapped as
   ``SELECT * FROM (<query>) AS osiris_q LIMIT 0`` through pymysql: type, length, scale, flags and
   charset), which name each column's SQL type and its server text expression.
2. **Fast path**: connectorx (Rust, as fast as the ``mysql`` C client) runs
   ``SELECT <server text of each column> FROM (<query>) AS osiris_q``, so the server formats every
   value and connectorx only moves UTF-8 strings into Arrow: nothing it could mis-read (zero dates,
   TIME beyond 24 h, DECIMAL(65,30)) reaches it as a typed value. MariaDB drops an ORDER BY inside a
   derived table unless it has a LIMIT, so a query with a top-level ORDER BY and no LIMIT gets
   ``LIMIT 18446744073709551615`` inside the wrapper. connectorx fetches at most 20,000 rows per
   batch (its fetch thread runs a few batches ahead; small batches keep memory flat), and each batch
   is asked for once it is most likely there, since connectorx waits holding the GIL
   (``_waiting_without_the_gil``).
3. **Generic path** (when connectorx fails, or ``OSIRIS_MYSQL_PATH=generic`` forces it, as the
   conformance suite does): pymysql's unbuffered cursor with every *decoder* removed, so each
   value arrives as the raw text protocol string; binary and BIT values get the same two
   documented conversions as the server expressions.

Both paths connect with the source's options (``sources.mysql_options``: charset, socket, TLS),
each told them in its own driver's terms; a client certificate, which connectorx cannot present,
sends the read to the generic path.

A connectorx panic never reaches the console: its Rust output on fd 2 is filtered
(``sources.native_stderr``) and the fallback is one warning naming the path taken and why.

Deliberately not here: URL policy and password scrubbing (``sources.sql_extract``), CSV.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from osiris_dagster.formats.mysql_text import MySQLTextColumn, mysql_text_column, quote_identifier
from osiris_dagster.sources.errors import SourceError
from osiris_dagster.sources.mysql_options import MySQLOptions

if TYPE_CHECKING:
    from sqlalchemy.engine import URL as SQLAlchemyURL

    from osiris_dagster.sources.source_url import SourceURL

    URL = SQLAlchemyURL | SourceURL  # the reader uses only the parts both have

__all__ = ["FORCE_PATH_ENV", "mysql_batches"]

FORCE_PATH_ENV = "OSIRIS_MYSQL_PATH"  # "generic": skip connectorx (tests compare both paths)
_CONNECTORX_BATCH_ROWS = 20_000


def mysql_batches(
    url: URL, query: str, batch_rows: int, log: logging.Logger
) -> tuple[list[tuple[str, str]], Iterator[pa.RecordBatch]]:
    """``([(column, sql type)], text batches)`` of ``query``; batches are read lazily."""
    options = MySQLOptions.of(url.query)  # an unknown option fails before anything connects
    fields, server_offers_tls = _result_fields(url, query)
    columns = [mysql_text_column(field) for field in fields]
    described = [(c.name, c.sql_type) for c in columns]
    if os.environ.get(FORCE_PATH_ENV) == "generic":
        return described, _generic_batches(url, query, columns, batch_rows)
    tls = options.connectorx_query(server_offers_tls)
    if tls is None:
        log.info("a client certificate is configured: reading through pymysql (connectorx cannot present one)")
        return described, _generic_batches(url, query, columns, batch_rows)
    return described, _fast_then_generic(url, query, columns, batch_rows, log, tls)


def _fast_then_generic(
    url: URL, query: str, columns: Sequence[MySQLTextColumn], batch_rows: int, log: logging.Logger, tls: str
) -> Iterator[pa.RecordBatch]:
    from osiris_dagster.sources.native_stderr import panic_output_filtered

    sent = 0
    with panic_output_filtered() as output:
        try:
            for batch in _connectorx_batches(url, query, columns, batch_rows, tls):
                sent += batch.num_rows
                yield batch
            return
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # a pyo3 PanicException is a BaseException
            if sent:
                raise  # rows already went out: re-reading would duplicate them
            reason = output.panics[0].splitlines()[0] if output.panics else f"{type(exc).__name__}: {exc}"
    log.warning("connectorx could not read the query (%s); reading it through pymysql instead", reason[:300])
    yield from _generic_batches(url, query, columns, batch_rows)


def _pymysql_connect(url: URL, **extra: Any) -> Any:
    import pymysql  # only MySQL extractions need it

    connect_args: dict[str, Any] = {
        "host": url.host or "localhost",
        "port": url.port or 3306,
        "user": url.username or "",
        "password": url.password or "",
        "database": url.database,
        **MySQLOptions.of(url.query).pymysql_args(),
        **extra,
    }
    try:
        return _connection_class()(**connect_args)
    except (pymysql.MySQLError, OSError) as exc:  # OSError: a TLS file that cannot be read
        raise SourceError(f"cannot connect to MySQL at {url.host}:{url.port or 3306}: {exc}") from None


@functools.cache
def _connection_class() -> type:
    """pymysql's connection without the ~35 ms it spends loading CA certificates it never reads.

    Given no TLS options, pymysql 1.2 asks for TLS if the server offers it ("preferred") with a
    context that verifies neither the certificate nor the host name, but builds that context with
    ``ssl.create_default_context``, which first parses every system root certificate: 34-36 ms of
    CPU on the critical path before the first query (the extraction's metadata query connects
    first; measured on the 2-core benchmark machine, where the `mysql` client's whole run of a
    100k-row table takes ~0.15 s). This context is the same one without that store: the same TLS
    when the server offers it, and, as before, nothing verified. Explicit TLS options keep
    pymysql's own handling.
    """
    import ssl

    import pymysql.connections

    class Connection(pymysql.connections.Connection):
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if sslp != {}:  # pymysql passes {} only for "preferred" without options
                return super()._create_ssl_ctx(sslp)
            # create_default_context's and pymysql's steps, minus load_default_certs
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.verify_flags &= ~ssl.VERIFY_X509_STRICT
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if (keylog := os.environ.get("SSLKEYLOGFILE")) and not sys.flags.ignore_environment:
                context.keylog_filename = keylog
            return context

    return Connection


def _result_fields(url: URL, query: str) -> tuple[list[Any], bool]:
    """The result's column metadata without reading a row (pymysql field packets), and whether
    the server offers TLS (its handshake's capability flag: what "preferred" decides by)."""
    import pymysql
    from pymysql.constants import CLIENT

    connection = _pymysql_connect(url)
    try:
        with connection.cursor() as cursor:
            try:
                cursor.execute(f"SELECT * FROM ({query}) AS osiris_q LIMIT 0")
            except pymysql.MySQLError as exc:
                raise SourceError(f"query failed: {exc}") from None
            fields = list(cursor._result.fields)  # the public description lacks flags and charset
            return fields, bool(connection.server_capabilities & CLIENT.SSL)
    finally:
        connection.close()


def _connectorx_batches(
    url: URL, query: str, columns: Sequence[MySQLTextColumn], batch_rows: int, tls: str
) -> Iterator[pa.RecordBatch]:
    import connectorx  # imported here: the generic path must not need it

    inner = query
    if _has_top_level_order_by_without_limit(query):
        inner = f"{query} LIMIT 18446744073709551615"
    select_list = ", ".join(f"{c.server_text} AS {quote_identifier(c.name)}" for c in columns)
    fetch_query = f"SELECT {select_list} FROM ({inner}) AS osiris_q"
    schema = pa.schema([pa.field(c.name, pa.string()) for c in columns])
    batch_size = min(batch_rows, _CONNECTORX_BATCH_ROWS)
    reader = connectorx.read_sql(
        _connectorx_url(url, tls), fetch_query, return_type="arrow_stream", batch_size=batch_size
    )
    for batch in _waiting_without_the_gil(reader, batch_size):
        yield pa.RecordBatch.from_arrays(
            [_as_text(a, c) for a, c in zip(batch.columns, columns, strict=True)], schema=schema
        )


# Pausing before connectorx's next batch (see _waiting_without_the_gil): the pause grows by part of
# each wait that still blocked, and shrinks slowly while batches are ready. It never exceeds
# _MAX_PAUSE_S: a stall of the server (a sort before the first row, a lock) is not a batch's
# fetch time, and connectorx reads ahead while the reader sleeps (~2 batches in 50 ms at most).
_BLOCKED_S, _PAUSE_GROWTH, _PAUSE_DECAY, _MAX_PAUSE_S = 0.002, 0.75, 0.9, 0.05


def _waiting_without_the_gil(batches: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """``batches``, each one asked for when connectorx has most likely fetched it already.

    connectorx fetches on its own thread, but its iterator waits for the next batch *holding the
    GIL*: every other Python thread of the process (the CSV written while the table is extracted,
    ``targets.csv_prepared``) stands still until the batch arrives. Measured on the 1M-row
    benchmark (2 cores): the GIL was held 1.8-2.0 s of a 1.8-2.0 s fetch, and a thread waking every
    millisecond woke 52 times instead of ~1,500. So this sleeps (GIL released) about as long as
    the last waits blocked before asking for the next batch: then 0.2 s held, ~1,500 wake-ups, the
    same fetch time. connectorx reads ahead, so sleeping a little too long only lets a batch wait.
    """
    iterator = iter(batches)
    batch = next(iterator, None)  # the query's start: no batch time to learn from
    pause = 0.0
    while batch is not None:
        yield batch
        # After a short batch (the last one, as a rule) ask at once: the end needs no wait.
        if pause and batch.num_rows >= batch_rows:
            time.sleep(pause)
        started = time.perf_counter()
        batch = next(iterator, None)
        blocked = time.perf_counter() - started
        pause = min(pause + blocked * _PAUSE_GROWTH, _MAX_PAUSE_S) if blocked > _BLOCKED_S else pause * _PAUSE_DECAY


def _as_text(array: pa.Array, column: MySQLTextColumn) -> pa.Array:
    t = array.type
    if t == pa.string():
        return array
    if pa.types.is_large_string(t) or pa.types.is_integer(t):
        return array.cast(pa.string())  # integers: the digits the server's text protocol sends
    # Anything else would need formatting here: refuse it, so the read falls back to pymysql.
    raise TypeError(f"connectorx read column {column.name!r} ({column.sql_type}) as {t}, not text")


def _generic_batches(
    url: URL, query: str, columns: Sequence[MySQLTextColumn], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    import pymysql
    import pymysql.converters
    import pymysql.cursors

    # Encoders only (Python type -> SQL literal): without decoders pymysql returns the protocol text.
    encoders = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}
    connection = _pymysql_connect(url, conv=encoders, cursorclass=pymysql.cursors.SSCursor)
    schema = pa.schema([pa.field(c.name, pa.string()) for c in columns])
    convert: list[Callable[[Any], str] | None] = [c.raw_text for c in columns]
    try:
        with connection.cursor() as cursor:
            try:
                cursor.execute(query)
            except pymysql.MySQLError as exc:
                raise SourceError(f"query failed: {exc}") from None
            while rows := cursor.fetchmany(batch_rows):
                arrays = []
                for index, values in enumerate(zip(*rows, strict=True)):
                    to_text = convert[index]
                    if to_text is not None:
                        values = tuple(None if v is None else to_text(v) for v in values)
                    arrays.append(pa.array(values, pa.string()))
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    finally:
        connection.close()


def _connectorx_url(url: URL, tls: str) -> str:
    """connectorx's URL for ``url``, with its TLS parameters ``tls`` (`MySQLOptions.connectorx_query`)."""
    user = urllib.parse.quote(url.username or "", safe="")
    password = urllib.parse.quote(url.password or "", safe="")
    auth = f"{user}:{password}@" if url.username else ""
    database = urllib.parse.quote(url.database or "", safe="")
    return f"mysql://{auth}{url.host or 'localhost'}:{url.port or 3306}/{database}?{tls}"


_TOKEN = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`]|``)*`|--[^\n]*|\#[^\n]*|/\*.*?\*/|[()]|\w+""",
    re.DOTALL,
)


def _has_top_level_order_by_without_limit(query: str) -> bool:
    """Whether wrapping ``query`` in a derived table would lose its row order (see module doc)."""
    depth = 0
    words: list[str] = []
    for match in _TOKEN.finditer(query):
        token = match.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0 and (token[0].isalnum() or token[0] == "_"):
            words.append(token.upper())
    has_order_by = any(a == "ORDER" and b == "BY" for a, b in itertools.pairwise(words))
    return has_order_by and "LIMIT" not in words
