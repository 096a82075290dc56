"""Extracting a SQL query result into a staged Arrow file (the extracted-table asset).

A ``read`` step calls ``extract_to_staging``; the ``write`` step re-opens the staged file with
``open_staged`` / ``iter_staged_batches``.  Memory stays at about one batch whatever the table
size: rows arrive in batches and each batch is appended to the staged file before the next.

The staging file format (Arrow IPC, written atomically) is ``osiris_dagster.staging``'s business.

Two ways in:

* **MySQL/MariaDB** (``mysql://``, ``mysql+pymysql://``, ``mariadb...``): connectorx streams Arrow
  batches from Rust (as fast as the ``mysql`` C client).  connectorx loses source precision and
  panics on some values, so the exact column types are first read from the server (the query
  wrapped as ``SELECT * FROM (<query>) AS q LIMIT 0`` through pymysql, whose field packets carry
  type, length, scale, flags and charset) and every batch is cast to them.  Two types are
  converted by the server because connectorx 0.4.6 cannot read them: DECIMAL (it panics unless the
  value's scale is 10) is fetched as ``CAST(c AS CHAR)`` and parsed into decimal128/256(p,s); TIME
  (it panics outside 00:00..24:00) is fetched as signed microseconds and staged as
  ``duration("us")``, because MySQL TIME is a signed duration up to 838:59:59.  That needs the
  query wrapped in a derived table, and MariaDB drops an ORDER BY inside a derived table unless it
  has a LIMIT, so a query with a top-level ORDER BY and no LIMIT gets ``LIMIT 18446744073709551615``
  inside the wrapper (the server then materializes the sorted result before sending it).
  connectorx fetches at most 20,000 rows per batch whatever ``batch_rows`` says (its fetch thread
  runs a few batches ahead; small batches keep memory flat), so staged batches are never larger
  than ``batch_rows`` but may be smaller.
  If connectorx still fails (a type or value it rejects, e.g. GEOMETRY or a zero date) the query
  is re-run through the generic path below with the same exact schema.
* **Any other SQLAlchemy URL** (SQLite, PostgreSQL, ...): the generic path — a server-side cursor
  (``stream_results=True``) read with ``fetchmany(batch_rows)``, each chunk turned into an Arrow
  batch of a schema fixed before the first batch is written:

  - MySQL (fallback): the exact schema above;
  - PostgreSQL: from ``cursor.description`` type OIDs (numeric with a declared precision/scale
    becomes decimal; unconstrained numeric, intervals, json, uuid, arrays become text);
  - SQLite: when the query is table-like — ``SELECT * | col, col ... FROM <one table>`` optionally
    followed by WHERE / ORDER BY / LIMIT — every result column named like a table column takes
    that column's declared type (``PRAGMA table_info``), so a ``DECIMAL(3,1)`` column holding REAL
    7.9 and INTEGER 8 becomes decimal128(3,1) 7.9 / 8.0;
  - otherwise, and for any column the above leaves open, the type of the first non-NULL value of
    the first chunk (int -> int64, float -> float64, str -> string, bytes -> binary ...); a column
    with no value in the first chunk is text.  A later value that does not fit is a SourceError
    naming the column (CAST it in the query).

Errors are ``SourceError`` whose message never contains the URL's password, raised ``from None``
so a driver's original message (which may echo a connection string) does not ride along.

Deliberately not here: connection profiles and secrets policy (callers pass a resolved URL),
retries, CSV or any other output format, Dagster.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from osiris_dagster.arrow_memory import use_streaming_memory_pool
from osiris_dagster.staging import ExtractedTable, open_staged, staged_file

__all__ = ["SourceError", "extract_to_staging"]


_log = logging.getLogger(__name__)


class SourceError(Exception):
    """The source could not be read; the message is safe to log (no password)."""


def extract_to_staging(url: URL | str, query: str, target: Path, *, batch_rows: int = 100_000) -> ExtractedTable:
    """Run ``query`` against ``url`` and stage the result at ``target`` (atomically)."""
    use_streaming_memory_pool()
    url = make_url(url)
    target = Path(target)
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    try:
        if url.get_backend_name() in ("mysql", "mariadb"):
            _extract_mysql(url, query, target, batch_rows)
        else:
            _extract_generic(url, query, target, batch_rows, schema=None, converters=None)
    except SourceError as exc:
        raise SourceError(_scrub(str(exc), url)) from None
    except OSError:
        raise  # the staging side (disk full, permissions): not the source's fault
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # connectorx panics (pyo3 PanicException) are BaseException
        raise SourceError(_scrub(f"{type(exc).__name__}: {exc}", url)) from None
    return open_staged(target)


# --------------------------------------------------------------------------------------------
# MySQL / MariaDB: exact metadata via pymysql, rows via connectorx


@dataclass(frozen=True)
class _MySQLColumn:
    name: str
    arrow_type: pa.DataType
    fetch_as: str | None  # SQL expression over the column replacing it in the fetch, or None
    to_python: Callable[[Any], Any] | None  # generic-path value conversion, None = as is


# pymysql.constants.FIELD_TYPE values (kept literal: they are the wire protocol's).
_DECIMAL, _TINY, _SHORT, _LONG, _FLOAT, _DOUBLE, _NULL, _TIMESTAMP = 0, 1, 2, 3, 4, 5, 6, 7
_LONGLONG, _INT24, _DATE, _TIME, _DATETIME, _YEAR, _NEWDATE, _VARCHAR, _BIT = 8, 9, 10, 11, 12, 13, 14, 15, 16
_JSON, _NEWDECIMAL, _ENUM, _SET, _GEOMETRY = 245, 246, 247, 248, 255
_UNSIGNED_FLAG = 32
_BINARY_CHARSET = 63
_CONNECTORX_BATCH_ROWS = 20_000
# connectorx 0.4.6 cannot read these at all: go straight to the generic path.
_CONNECTORX_UNSUPPORTED = {_GEOMETRY, _NULL}


def _extract_mysql(url: URL, query: str, target: Path, batch_rows: int) -> None:
    query = _strip_statement(query)
    fields = _mysql_result_fields(url, query)
    columns = [_mysql_column(field) for field in fields]
    schema = pa.schema([pa.field(c.name, c.arrow_type) for c in columns])
    converters = [c.to_python for c in columns]
    if not any(field.type_code in _CONNECTORX_UNSUPPORTED for field in fields):
        try:
            _extract_mysql_connectorx(url, query, columns, schema, target, batch_rows)
            return
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # connectorx panics (pyo3 PanicException) are BaseException
            # Documented fallback: a type or value connectorx rejects; the exact path below reads
            # everything pymysql can, with the same schema, so the staged file is identical.
            _log.warning(
                "connectorx could not read the query (%s); re-reading it through the generic path",
                _scrub(f"{type(exc).__name__}: {str(exc)[:300]}", url),
            )
    _extract_generic(url, query, target, batch_rows, schema=schema, converters=converters)


def _mysql_result_fields(url: URL, query: str) -> list[Any]:
    """The result's column metadata without reading a row (pymysql field packets)."""
    import pymysql  # only MySQL extractions need it

    connect_args: dict[str, Any] = {
        "host": url.host or "localhost",
        "port": url.port or 3306,
        "user": url.username or "",
        "password": url.password or "",
        "database": url.database,
        "charset": str(url.query.get("charset", "utf8mb4")),
    }
    if "unix_socket" in url.query:
        connect_args["unix_socket"] = str(url.query["unix_socket"])
    try:
        connection = pymysql.connect(**connect_args)
    except pymysql.MySQLError as exc:
        raise SourceError(f"cannot connect to MySQL at {url.host}:{url.port or 3306}: {exc}") from None
    try:
        with connection.cursor() as cursor:
            try:
                cursor.execute(f"SELECT * FROM ({query}) AS osiris_q LIMIT 0")
            except pymysql.MySQLError as exc:
                raise SourceError(f"query failed: {exc}") from None
            return list(cursor._result.fields)  # the public description lacks flags and charset
    finally:
        connection.close()


def _mysql_column(field: Any) -> _MySQLColumn:
    name = field.name
    code = field.type_code
    unsigned = bool(field.flags & _UNSIGNED_FLAG)
    binary = field.charsetnr == _BINARY_CHARSET
    quoted = _quote_mysql_identifier(name)

    def plain(arrow_type: pa.DataType, to_python: Callable[[Any], Any] | None = None) -> _MySQLColumn:
        return _MySQLColumn(name, arrow_type, None, to_python)

    if code == _TINY:
        # TINYINT(1) (BOOLEAN) is int8 too: 0/1 as stored, never coerced to bool.
        return plain(pa.int16() if unsigned else pa.int8())
    if code == _SHORT:
        return plain(pa.int32() if unsigned else pa.int16())
    if code in (_LONG, _INT24):
        return plain(pa.int64() if unsigned and code == _LONG else pa.int32())
    if code == _LONGLONG:
        return plain(pa.uint64() if unsigned else pa.int64())
    if code == _YEAR:
        return plain(pa.int16())
    if code == _BIT:
        # BIT(64) can exceed int64; narrower BITs are plain numbers.
        return plain(pa.uint64() if field.length >= 64 else pa.int64(), _bit_to_int)
    if code == _FLOAT:
        return plain(pa.float32())
    if code == _DOUBLE:
        return plain(pa.float64())
    if code in (_DECIMAL, _NEWDECIMAL):
        scale = field.scale
        # The field length is the display width: digits + point (if scale) + sign (if signed).
        precision = field.length - (1 if scale > 0 else 0) - (0 if unsigned else 1)
        precision = max(precision, scale, 1)
        arrow_type = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
        return _MySQLColumn(name, arrow_type, f"CAST({quoted} AS CHAR)", None)
    if code in (_DATE, _NEWDATE):
        return plain(pa.date32(), _date_or_none)
    if code in (_DATETIME, _TIMESTAMP):
        return plain(pa.timestamp("us"), _datetime_or_none)
    if code == _TIME:
        # TIME_TO_SEC keeps the fraction as an exact decimal; * 1e6 is then an integer.
        return _MySQLColumn(name, pa.duration("us"), f"CAST(TIME_TO_SEC({quoted}) * 1000000 AS SIGNED)", None)
    if code == _GEOMETRY:
        return plain(pa.binary())
    if code == _NULL:
        return plain(pa.string())
    # VARCHAR, CHAR, TEXT, BLOB, ENUM, SET, JSON: text unless the column's charset is binary.
    return plain(pa.binary() if binary else pa.string(), _bytes_or_text(binary))


def _extract_mysql_connectorx(
    url: URL,
    query: str,
    columns: Sequence[_MySQLColumn],
    schema: pa.Schema,
    target: Path,
    batch_rows: int,
) -> None:
    import connectorx  # imported here: the generic path must not need it

    fetch_query = query
    if any(c.fetch_as for c in columns):
        inner = query
        if _has_top_level_order_by_without_limit(query):
            inner = f"{query} LIMIT 18446744073709551615"
        select_list = ", ".join(
            f"{c.fetch_as} AS {_quote_mysql_identifier(c.name)}" if c.fetch_as else _quote_mysql_identifier(c.name)
            for c in columns
        )
        fetch_query = f"SELECT {select_list} FROM ({inner}) AS osiris_q"

    # connectorx's fetch thread runs ahead of the consumer by a few batches: smaller batches keep
    # that lead (and the process's memory) small at no measurable cost in speed.
    batch_size = min(batch_rows, _CONNECTORX_BATCH_ROWS)
    reader = connectorx.read_sql(_connectorx_url(url), fetch_query, return_type="arrow_stream", batch_size=batch_size)
    with staged_file(target, schema) as staged:
        for batch in reader:
            staged.write(_cast_connectorx_batch(batch, columns, schema))


def _cast_connectorx_batch(batch: pa.RecordBatch, columns: Sequence[_MySQLColumn], schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for column, array in zip(columns, batch.columns, strict=True):
        target = column.arrow_type
        if array.type == target:
            arrays.append(array)
        elif column.to_python is _bit_to_int and (
            pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)
        ):
            # connectorx hands BIT(n) over as big-endian bytes.
            arrays.append(pa.array([_bit_to_int(v) for v in array.to_pylist()], type=target))
        else:
            # Safe casts only: a value that does not fit its exact type must fail, not wrap.
            arrays.append(pc.cast(array, target))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _connectorx_url(url: URL) -> str:
    user = urllib.parse.quote(url.username or "", safe="")
    password = urllib.parse.quote(url.password or "", safe="")
    auth = f"{user}:{password}@" if url.username else ""
    database = urllib.parse.quote(url.database or "", safe="")
    return f"mysql://{auth}{url.host or 'localhost'}:{url.port or 3306}/{database}"


def _quote_mysql_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _strip_statement(query: str) -> str:
    return query.strip().rstrip(";").rstrip()


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


def _bit_to_int(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return int.from_bytes(value, "big")


def _date_or_none(value: Any) -> Any:
    # pymysql returns MySQL's zero date ('0000-00-00') as a str: it has no date value, so NULL.
    return None if isinstance(value, str) else value


def _datetime_or_none(value: Any) -> Any:
    return None if isinstance(value, str) else value


def _bytes_or_text(binary: bool) -> Callable[[Any], Any]:
    if binary:
        return lambda v: v.encode("utf-8") if isinstance(v, str) else v
    return lambda v: v.decode("utf-8") if isinstance(v, bytes | bytearray) else v


# --------------------------------------------------------------------------------------------
# Generic path: SQLAlchemy server-side cursor + fetchmany


def _extract_generic(
    url: URL,
    query: str,
    target: Path,
    batch_rows: int,
    *,
    schema: pa.Schema | None,
    converters: Sequence[Callable[[Any], Any] | None] | None,
) -> None:
    if url.get_backend_name() in ("mysql", "mariadb"):
        # The generic MySQL path uses the driver this package pins, whatever the URL names.
        url = url.set(drivername="mysql+pymysql")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            declared = _sqlite_declared_types(connection, query) if url.get_backend_name() == "sqlite" else {}
            streaming = connection.execution_options(stream_results=True)
            # exec_driver_sql: the query is the user's SQL verbatim (text() would treat ":name" as a
            # bind parameter).
            result = streaming.exec_driver_sql(_strip_statement(query))
            description = result.cursor.description if result.cursor is not None else None
            if not description:
                raise SourceError("the query returns no result set")
            names = [d[0] for d in description]
            rows = result.fetchmany(batch_rows)
            if schema is None:
                types = [
                    _generic_column_type(d, declared.get(d[0].lower()), rows, i, url.get_backend_name())
                    for i, d in enumerate(description)
                ]
                schema = pa.schema([pa.field(n, t) for n, t in zip(names, types, strict=True)])
            to_python = list(converters) if converters is not None else [_converter_for(t) for t in schema.types]
            with staged_file(target, schema) as staged:
                while rows:
                    staged.write(_rows_to_batch(rows, schema, to_python))
                    rows = result.fetchmany(batch_rows)
    except sa.exc.DBAPIError as exc:
        raise SourceError(f"query failed: {exc.orig}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"query failed: {exc}") from None
    finally:
        engine.dispose()


def _rows_to_batch(
    rows: Sequence[Sequence[Any]], schema: pa.Schema, to_python: Sequence[Callable[[Any], Any] | None]
) -> pa.RecordBatch:
    arrays = []
    for index, field in enumerate(schema):
        values = [row[index] for row in rows]
        convert = to_python[index]
        try:
            if convert is not None:
                values = [None if v is None else convert(v) for v in values]
            arrays.append(pa.array(values, type=field.type))
        except (ValueError, TypeError, ArithmeticError, pa.ArrowException) as exc:
            raise SourceError(
                f"column {field.name!r}: a value does not fit {field.type} ({exc}); CAST it in the query"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# PostgreSQL type OIDs -> Arrow types; anything else is text.
_POSTGRES_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1083: pa.time64("us"),
    17: pa.binary(),
}
_POSTGRES_NUMERIC = 1700


def _generic_column_type(
    description: Sequence[Any],
    declared: str | None,
    rows: Sequence[Sequence[Any]],
    index: int,
    backend: str,
) -> pa.DataType:
    if backend == "postgresql":
        type_code = description[1]
        if type_code == _POSTGRES_NUMERIC:
            precision, scale = description[4], description[5]
            if precision:
                return _decimal_type(precision, scale or 0)
            return pa.string()
        return _POSTGRES_TYPES.get(type_code, pa.string())
    if declared is not None:
        declared_type = _sqlite_declared_arrow_type(declared)
        if declared_type is not None:
            return declared_type
    return _inferred_type(row[index] for row in rows)


def _inferred_type(values: Iterator[Any]) -> pa.DataType:
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            return pa.bool_()
        if isinstance(value, int):
            return pa.int64()
        if isinstance(value, float):
            return pa.float64()
        if isinstance(value, bytes | bytearray | memoryview):
            return pa.binary()
        if isinstance(value, dt.datetime):
            return pa.timestamp("us", tz="UTC") if value.tzinfo else pa.timestamp("us")
        if isinstance(value, dt.date):
            return pa.date32()
        if isinstance(value, dt.time):
            return pa.time64("us")
        if isinstance(value, dt.timedelta):
            return pa.duration("us")
        return pa.string()
    return pa.string()


def _decimal_type(precision: int, scale: int) -> pa.DataType:
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


_SQLITE_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def _sqlite_declared_arrow_type(declared: str) -> pa.DataType | None:
    """Arrow type for a SQLite declared column type; None = let the values decide."""
    t = declared.upper().strip()
    match = _SQLITE_DECIMAL.search(t)
    if match:
        return _decimal_type(int(match.group(1)), int(match.group(2) or 0))
    if "BOOL" in t or re.fullmatch(r"TINYINT\s*\(\s*1\s*\)", t):
        return pa.int8()
    if "INT" in t:
        return pa.int64()
    if "JSON" in t or "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return pa.string()
    if "BLOB" in t or "BINARY" in t:
        return pa.binary()
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return pa.float64()
    if "DATETIME" in t or "TIMESTAMP" in t:
        return pa.timestamp("us")
    if "DATE" in t:
        return pa.date32()
    if "TIME" in t:
        return pa.time64("us")
    return None


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


def _converter_for(arrow_type: pa.DataType) -> Callable[[Any], Any] | None:
    """Python value -> value pyarrow accepts for ``arrow_type`` (SQLite is dynamically typed)."""
    if pa.types.is_decimal(arrow_type):
        quantum = decimal.Decimal(1).scaleb(-arrow_type.scale)

        def to_decimal(v: Any) -> decimal.Decimal:
            # repr() of a float is its shortest round-trip text: REAL 7.9 -> Decimal("7.9").
            number = decimal.Decimal(repr(v)) if isinstance(v, float) else decimal.Decimal(v)
            exact = number.quantize(quantum, context=decimal.Context(prec=80))
            if exact != number:
                raise ValueError(f"{v!r} has more than {arrow_type.scale} decimals")
            return exact

        return to_decimal
    if pa.types.is_integer(arrow_type):
        return _to_int
    if pa.types.is_floating(arrow_type):
        return float
    if pa.types.is_string(arrow_type):
        return _to_text
    if pa.types.is_binary(arrow_type):
        return lambda v: v.encode("utf-8") if isinstance(v, str) else bytes(v)
    if pa.types.is_timestamp(arrow_type):
        return _to_datetime
    if pa.types.is_date(arrow_type):
        return lambda v: dt.date.fromisoformat(v) if isinstance(v, str) else v
    if pa.types.is_time(arrow_type):
        return lambda v: dt.time.fromisoformat(v) if isinstance(v, str) else v
    return None


def _to_int(v: Any) -> int:
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"{v!r} is not an integer")
        return int(v)
    return int(v)


def _to_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8")
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _to_datetime(v: Any) -> Any:
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v)
    return v


def _scrub(message: str, url: URL) -> str:
    password = url.password
    if not password:
        return message
    for form in {password, urllib.parse.quote(password, safe=""), urllib.parse.quote_plus(password)}:
        if form:
            message = message.replace(form, "***")
    return message
