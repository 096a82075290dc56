"""MySQL/MariaDB text rules: what each column's cell text is, and its SQL type name.

The contract (README "CSV values"): a cell is the server's text-protocol form of the value, what
``mysql --batch`` prints before its TSV escaping. The server already sends every value of a
plain query as that text, so nothing here formats a value: this module only says, per column,

* ``sql_type``: the column's type in MySQL terms from its result field packet (type code, length,
  scale, flags, charset): ``DECIMAL(3,1)``, ``DATETIME(3)``, ``BIGINT UNSIGNED``, ``VARCHAR(40)``;
* ``server_text``: the SQL expression whose value is that text as a character string, so a
  columnar reader (connectorx) only moves UTF-8 strings. Two kinds of column go as they are: text
  columns (already the text) and signed SMALLINT/MEDIUMINT/INT/BIGINT (connectorx reads them as
  integers and Arrow's integer -> string cast prints the same digits). On the 1M-row benchmark
  table (bench/extract_breakdown.py, machine shared) connectorx read the two text columns in
  2.58 s as they are and 3.46 s through CAST, the four integer columns in 1.99 s natively and
  2.68 s through CAST; dates 1.36 s natively vs 1.58 s through CAST, but a zero date makes
  connectorx panic, so temporal types stay server-formatted. ``CAST(c AS CHAR)`` is byte-identical to
  the text protocol for every numeric, temporal, string, ENUM/SET and JSON column (checked cell by
  cell against the raw protocol in tests/sources/test_conformance_mariadb.py: DOUBLE
  ``1.7976931348623157e308``, FLOAT ``3.40282e38``, DECIMAL(65,30) at scale, ``-838:59:59.99``,
  ``0000-00-00``, ``2024-02-00 01:02:03.400``, YEAR ``0000``). The two documented exceptions are
  formed by the server too: binary strings (BINARY/VARBINARY/BLOB, GEOMETRY) as
  ``CONCAT(CHAR(92 USING utf8mb4), 'x', LOWER(HEX(c)))`` (the backslash spelled as a code
  point, so ``NO_BACKSLASH_ESCAPES`` cannot change it), BIT as ``c + 0`` (unsigned digits);
* ``raw_text``: the same two exceptions for a value read through the raw text protocol (the
  generic path gets ``bytes`` for a binary column, the big-endian bytes for a BIT).

Deliberately not here: connecting, fetching, CSV quoting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MySQLTextColumn", "mysql_text_column", "quote_identifier"]

# pymysql.constants.FIELD_TYPE values (kept literal: they are the wire protocol's).
_DECIMAL, _TINY, _SHORT, _LONG, _FLOAT, _DOUBLE, _NULL, _TIMESTAMP = 0, 1, 2, 3, 4, 5, 6, 7
_LONGLONG, _INT24, _DATE, _TIME, _DATETIME, _YEAR, _NEWDATE, _VARCHAR, _BIT = 8, 9, 10, 11, 12, 13, 14, 15, 16
_JSON, _NEWDECIMAL, _ENUM, _SET = 245, 246, 247, 248
_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB, _VAR_STRING, _STRING, _GEOMETRY = 249, 250, 251, 252, 253, 254, 255
_UNSIGNED_FLAG, _ENUM_FLAG, _SET_FLAG = 32, 256, 2048
_BINARY_CHARSET = 63
# Bytes per character of the connection's charset (utf8mb4): VARCHAR lengths come in bytes.
_UTF8MB4_MAX_BYTES = 4

_INTEGERS = {_TINY: "TINYINT", _SHORT: "SMALLINT", _INT24: "MEDIUMINT", _LONG: "INT", _LONGLONG: "BIGINT"}
# Fetched natively by connectorx (as i16/i32/i64) and printed by Arrow; TINYINT is not, since
# connectorx may read TINYINT(1) as a boolean, nor are unsigned types (u64 beyond i64).
_NATIVE_INTEGERS = (_SHORT, _INT24, _LONG, _LONGLONG)
_TEMPORAL = {_DATETIME: "DATETIME", _TIMESTAMP: "TIMESTAMP", _TIME: "TIME"}
_BLOBS = (_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB)
_BLOB_SIZES = ((255, "TINY"), (65_535, ""), (16_777_215, "MEDIUM"))


@dataclass(frozen=True)
class MySQLTextColumn:
    name: str
    sql_type: str
    server_text: str  # SQL expression over the quoted column giving its cell text
    raw_text: Callable[[Any], str] | None  # raw-protocol value -> cell text; None: the value is the text


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mysql_text_column(field: Any) -> MySQLTextColumn:
    """The text rule of one result column, from its pymysql field packet."""
    name, code = field.name, field.type_code
    quoted = quote_identifier(name)
    sql_type = _sql_type(field)
    if code == _BIT:
        return MySQLTextColumn(name, sql_type, f"{quoted} + 0", _bit_digits)
    if code == _GEOMETRY or (_is_string(code) and field.charsetnr == _BINARY_CHARSET and code != _JSON):
        return MySQLTextColumn(name, sql_type, f"CONCAT(CHAR(92 USING utf8mb4), 'x', LOWER(HEX({quoted})))", _hex)
    if _is_string(code) or (code in _NATIVE_INTEGERS and not field.flags & _UNSIGNED_FLAG):
        # Already text, or a signed integer whose digits Arrow prints exactly as the server does:
        # fetched as they are (CAST would only cost server time; see the module docstring).
        return MySQLTextColumn(name, sql_type, quoted, _text)
    return MySQLTextColumn(name, sql_type, f"CAST({quoted} AS CHAR)", _text)


def _is_string(code: int) -> bool:
    return code in (_VARCHAR, _VAR_STRING, _STRING, _ENUM, _SET, _JSON) or code in _BLOBS


def _sql_type(field: Any) -> str:
    code, length, scale = field.type_code, field.length, field.scale
    unsigned = " UNSIGNED" if field.flags & _UNSIGNED_FLAG else ""
    if code in _INTEGERS:
        return _INTEGERS[code] + ("(1)" if code == _TINY and length == 1 else "") + unsigned
    if code in (_DECIMAL, _NEWDECIMAL):
        # The field length is the display width: digits + point (if scale) + sign (if signed).
        precision = max(length - (1 if scale > 0 else 0) - (0 if unsigned else 1), scale, 1)
        return f"DECIMAL({precision},{scale}){unsigned}"
    if code == _FLOAT:
        return "FLOAT" + unsigned
    if code == _DOUBLE:
        return "DOUBLE" + unsigned
    if code in (_DATE, _NEWDATE):
        return "DATE"
    if code in _TEMPORAL:
        return _TEMPORAL[code] + (f"({scale})" if 0 < scale <= 6 else "")
    if code == _YEAR:
        return "YEAR"
    if code == _BIT:
        return f"BIT({length})"
    if code == _GEOMETRY:
        return "GEOMETRY"
    if code == _NULL:
        return "NULL"
    if code == _JSON:
        return "JSON"
    binary = field.charsetnr == _BINARY_CHARSET
    if field.flags & _ENUM_FLAG or code == _ENUM:
        return "ENUM"
    if field.flags & _SET_FLAG or code == _SET:
        return "SET"
    if code in _BLOBS:
        # MariaDB sends every BLOB/TEXT as type BLOB; its byte length tells which one it is.
        size = length if binary else length // _UTF8MB4_MAX_BYTES
        prefix = next((name for limit, name in _BLOB_SIZES if size <= limit), "LONG")
        return prefix + ("BLOB" if binary else "TEXT")
    chars = length if binary else max(length // _UTF8MB4_MAX_BYTES, 1) if length else 0
    if code == _STRING:
        return f"BINARY({chars})" if binary else f"CHAR({chars})"
    return f"VARBINARY({chars})" if binary else f"VARCHAR({chars})"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else bytes(value).decode("utf-8")


def _hex(value: Any) -> str:
    return "\\x" + (value.encode("utf-8") if isinstance(value, str) else bytes(value)).hex()


def _bit_digits(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return str(int.from_bytes(value.encode("latin-1") if isinstance(value, str) else bytes(value), "big"))


_DIGITS = "0123456789"
_ALPHABETS = {
    # The characters the server's text of each type can contain (CSV quoting skips the scan for a
    # column whose alphabet cannot hold the delimiter; '"', CR and LF are in none of them).
    **dict.fromkeys(("TINYINT", "SMALLINT", "MEDIUMINT", "INT", "BIGINT", "YEAR", "BIT"), _DIGITS + "-"),
    "DECIMAL": _DIGITS + "-.",
    "FLOAT": _DIGITS + "-+.e",
    "DOUBLE": _DIGITS + "-+.e",
    **dict.fromkeys(("DATE", "DATETIME", "TIMESTAMP", "TIME"), _DIGITS + "-:. "),
}


def text_alphabet(sql_type: str) -> str | None:
    """Every character the server's text of a ``sql_type`` value can contain; None: anything."""
    name = sql_type.split("(")[0].split(" ")[0]
    if name.endswith("BLOB") or name in ("BINARY", "VARBINARY", "GEOMETRY"):
        return _DIGITS + "abcdef\\x"
    return _ALPHABETS.get(name)
