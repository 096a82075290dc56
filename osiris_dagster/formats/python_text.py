"""Text rules for databases that hand over stored values as Python objects (SQLite, other DB-API drivers).

SQLite stores each value with one of five storage classes; the contract (README "CSV values") is
the value as stored:

* INTEGER -> its digits; REAL -> the shortest text that round-trips (``repr``: ``0.1``, ``1e+20``);
* TEXT as is; BLOB -> ``\\x`` + lowercase hex (the documented binary exception); NULL -> null.

A declared type never changes a value: a ``DECIMAL(3,1)`` column holding INTEGER 8 stays ``8``,
because that is what SQLite stores and prints. Any other driver reached through the generic
SQLAlchemy path gets the same rules for the same Python types, plus ``str()`` for the rest
(dates and decimals print in their ISO / exact form).

Deliberately not here: connecting, fetching, CSV quoting.
"""

from __future__ import annotations

from typing import Any

__all__ = ["storage_class", "value_text"]


def value_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def storage_class(value: Any) -> str:
    """The SQLite storage class of a Python value (the column's type when nothing is declared)."""
    if isinstance(value, bool | int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, bytes | bytearray | memoryview):
        return "BLOB"
    return "TEXT"
