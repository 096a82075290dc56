"""Reading a MySQL/MariaDB query result as text batches: the C row reader, pymysql as the generic path.

Every cell is the server's own text for the value (``formats.mysql_text``): the query is sent as
it is over the text protocol, in which the server sends every value as that text, and neither
path parses or formats a value.

1. pymysql connects with the source's options (``sources.mysql_options``: charset, socket, TLS),
   sends the query and reads the result's column definitions (type, length, scale, flags,
   charset), which name each column's SQL type and whether its text takes one of the two
   documented conversions (binary strings as ``\\x`` + hex, BIT as unsigned digits).
2. **Fast path**: the row packets that follow are read from pymysql's buffered socket reader by
   ``sources._mysql_rows`` (C), which splits them into Arrow ``utf8`` buffers with the GIL
   released: 0.2-0.3 CPU-s per 1M rows of the benchmark table, where the whole ``mysql`` client
   spends ~1.2 (README "Performance"). Batches hold at most ``_FAST_BATCH_ROWS`` rows and about
   ``_FAST_BATCH_BYTES`` of row data, so memory stays flat however wide the rows.
3. **Generic path**: pymysql reads the same rows itself, one Python object per cell, with every
   *decoder* removed so each value is the raw protocol text (~10x the CPU). Taken when the C
   module cannot be imported (a source tree that was never built: one warning says so), or when
   ``OSIRIS_MYSQL_PATH=generic`` forces it (the conformance suite compares both paths byte for
   byte against the server).

One connection, one query: the column definitions come from the query's own result set, and
TLS, authentication and every connection option are pymysql's on both paths.

Deliberately not here: URL policy and password scrubbing (``sources.sql_extract``), CSV.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from osiris_dagster.formats.mysql_text import BIT_DIGITS, HEX, MySQLTextColumn, mysql_text_column
from osiris_dagster.sources.errors import SourceError
from osiris_dagster.sources.mysql_options import MySQLOptions

if TYPE_CHECKING:
    from sqlalchemy.engine import URL as SQLAlchemyURL

    from osiris_dagster.sources.source_url import SourceURL

    URL = SQLAlchemyURL | SourceURL  # the reader uses only the parts both have

__all__ = ["FORCE_PATH_ENV", "mysql_batches"]

FORCE_PATH_ENV = "OSIRIS_MYSQL_PATH"  # "generic": pymysql reads the rows (tests compare both paths)
_FAST_BATCH_ROWS = 20_000
_FAST_BATCH_BYTES = 8 << 20


def mysql_batches(
    url: URL, query: str, batch_rows: int, log: logging.Logger
) -> tuple[list[tuple[str, str]], Iterator[pa.RecordBatch]]:
    """``([(column, sql type)], text batches)`` of ``query``; batches are read lazily.

    The query has run and its column definitions are read when this returns; the rows follow as
    the batches are taken. Closing the iterator early closes the connection.
    """
    import pymysql

    connection = _pymysql_connect(url, conv=_raw_text_conversions())
    try:
        try:
            connection.query(query, unbuffered=True)
        except pymysql.MySQLError as exc:
            raise SourceError(f"query failed: {exc}") from None
        result = connection._result  # pymysql's unbuffered result: its field packets are read
        if result is None or not result.unbuffered_active:
            raise SourceError("the query returns no result set")
        columns = [mysql_text_column(field) for field in result.fields]
        rows_of = _rows_reader(connection, log)
        batches = rows_of(connection, result, columns, batch_rows)
    except BaseException:
        _abandon(connection)
        raise
    return [(c.name, c.sql_type) for c in columns], batches


RowsOf = Callable[[Any, Any, Sequence[MySQLTextColumn], int], Iterator[pa.RecordBatch]]


def _rows_reader(connection: Any, log: logging.Logger) -> RowsOf:
    if os.environ.get(FORCE_PATH_ENV) == "generic":
        return _generic_rows
    if connection.encoding != "utf8":
        # The C reader hands the server's bytes to Arrow as UTF-8; a connection in another charset
        # (``charset: latin1``) sends other bytes, which pymysql decodes. Not a failure: no warning.
        return _generic_rows
    try:
        from osiris_dagster.sources import _mysql_rows  # noqa: F401  (the C module: built with the package)
    except ImportError as exc:
        log.warning("the MySQL row reader is not built (%s); reading through pymysql instead (~10x the CPU)", exc)
        return _generic_rows
    return _native_rows


def _native_rows(
    connection: Any, result: Any, columns: Sequence[MySQLTextColumn], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    import pymysql.err

    from osiris_dagster.sources import _mysql_rows

    kind = {HEX: _mysql_rows.HEX, BIT_DIGITS: _mysql_rows.BIT}
    kinds = bytes(kind.get(c.conversion, _mysql_rows.TEXT) for c in columns)
    # pymysql reads through a buffered reader, which may already hold the first rows: they are
    # handed over, and the reader reads the socket itself from then on (the buffered reader's
    # readinto1 would block for more bytes even when the ones it holds end the result).
    buffered = connection._rfile
    head = buffered.read1(len(buffered.peek()))  # peek: the held bytes, or one read if none
    reader = _mysql_rows.RowReader(
        buffered.raw.readinto,
        head,
        kinds,
        connection._next_seq_id,
        min(batch_rows, _FAST_BATCH_ROWS),
        _FAST_BATCH_BYTES,
    )
    schema = pa.schema([pa.field(c.name, pa.string()) for c in columns])
    utf8 = pa.string()
    try:
        while True:
            try:
                parts = reader.next_batch()
            except _mysql_rows.ServerError as exc:
                try:
                    pymysql.err.raise_mysql_exception(exc.args[0])
                except pymysql.MySQLError as server_error:
                    raise SourceError(f"query failed: {server_error}") from None
                raise  # not reached: the payload is an ERR packet
            except (_mysql_rows.ProtocolError, OSError) as exc:  # OSError: ConnectionError, timeouts
                raise SourceError(f"lost the MySQL connection while reading rows: {exc}") from None
            if parts is None:
                break
            arrays = [
                pa.Array.from_buffers(
                    utf8,
                    rows,
                    [None if validity is None else pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(values)],
                    null_count,
                )
                for rows, null_count, validity, offsets, values in parts
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        # The end-of-rows packet was read here, not by pymysql: tell it, and close politely.
        result.unbuffered_active = False
        connection._next_seq_id = reader.sequence
        connection.close()
    finally:
        _abandon(connection)


def _generic_rows(
    connection: Any, result: Any, columns: Sequence[MySQLTextColumn], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    schema = pa.schema([pa.field(c.name, pa.string()) for c in columns])
    convert = [c.raw_text for c in columns]
    try:
        while True:
            rows = []
            while len(rows) < batch_rows and (row := result._read_rowdata_packet_unbuffered()) is not None:
                rows.append(row)
            if not rows:
                break
            arrays = []
            for to_text, values in zip(convert, zip(*rows, strict=True), strict=True):
                if to_text is not None:
                    values = tuple(None if v is None else to_text(v) for v in values)
                arrays.append(pa.array(values, pa.string()))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        connection.close()
    finally:
        _abandon(connection)


def _abandon(connection: Any) -> None:
    """Close without reading the rest of the result (the server stops when the socket closes)."""
    result = connection._result
    if result is not None:
        result.unbuffered_active = False  # else pymysql's result drains every remaining row on GC
    if connection.open:
        connection._force_close()


@functools.cache
def _raw_text_conversions() -> dict[Any, Any]:
    """pymysql's encoders only (Python type -> SQL literal): without decoders it returns the text."""
    import pymysql.converters

    return {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}


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
    CPU on the critical path before the first query (measured on the 2-core benchmark machine,
    where the `mysql` client's whole run of a 100k-row table takes ~0.15 s). This context is the
    same one without that store: the same TLS when the server offers it, and, as before, nothing
    verified. Explicit TLS options keep pymysql's own handling.
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
