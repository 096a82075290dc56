"""MySQL/MariaDB text rules: what each column's cell text is, and its SQL type name.

The contract (README "CSV values"): a cell is the server's text-protocol form of the value, what
``mysql --batch`` prints before its TSV escaping. The server sends every value of a plain query as
that text, so nothing here formats a value: this module only says, per column,

* ``sql_type``: the column's type in MySQL terms from its result field packet (type code, length,
  scale, flags, charset): ``DECIMAL(3,1)``, ``DATETIME(3)``, ``BIGINT UNSIGNED``, ``VARCHAR(40)``;
* ``conversion``: ``TEXT`` (the protocol's bytes are the cell: numbers, dates, times, strings,
  ENUM/SET, JSON; checked cell by cell against the raw protocol in
  tests/sources/test_conformance_mariadb.py: DOUBLE ``1.7976931348623157e308``, FLOAT
  ``3.40282e38``, DECIMAL(65,30) at scale, ``-838:59:59.99``, ``0000-00-00``,
  ``2024-02-00 01:02:03.400``, YEAR ``0000``), or one of the two documented exceptions: ``HEX``
  for binary strings (BINARY/VARBINARY/BLOB, GEOMETRY: ``\\x`` + lowercase hex) and ``BIT_DIGITS``
  for BIT (the big-endian bytes as unsigned digits). The C row reader applies them itself;
* ``raw_text``: the same conversion for a value pymysql read through the raw text protocol (the
  generic path gets ``bytes`` for a binary column, the big-endian bytes for a BIT).

Deliberately not here: connecting, fetching, CSV quoting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BIT_DIGITS", "HEX", "TEXT", "MySQLTextColumn", "mysql_text_column"]

TEXT, HEX, BIT_DIGITS = "text", "hex", "bit digits"  # how a column's protocol bytes become its cell

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
_TEMPORAL = {_DATETIME: "DATETIME", _TIMESTAMP: "TIMESTAMP", _TIME: "TIME"}
_BLOBS = (_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB)
_BLOB_SIZES = ((255, "TINY"), (65_535, ""), (16_777_215, "MEDIUM"))


@dataclass(frozen=True)
class MySQLTextColumn:
    name: str
    sql_type: str
    conversion: str  # TEXT, HEX or BIT_DIGITS
    raw_text: Callable[[Any], str]  # a value as pymysql returns it without decoders -> cell text


def mysql_text_column(field: Any) -> MySQLTextColumn:
    """The text rule of one result column, from its pymysql field packet."""
    name, code = field.name, field.type_code
    sql_type = _sql_type(field)
    if code == _BIT:
        return MySQLTextColumn(name, sql_type, BIT_DIGITS, _bit_digits)
    if code == _GEOMETRY or (_is_string(code) and field.charsetnr == _BINARY_CHARSET and code != _JSON):
        return MySQLTextColumn(name, sql_type, HEX, _hex)
    return MySQLTextColumn(name, sql_type, TEXT, _text)


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
