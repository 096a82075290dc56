"""PostgreSQL text rules: every value as the type's own output function prints it.

The contract (README "CSV values"): a cell is what ``COPY (query) TO STDOUT (FORMAT csv)`` writes
with the connection's default settings. That is exactly the text-format result protocol: the
server runs each type's output function (``t``/``f``, ``NaN``, ``infinity``, ``24:00:00``,
intervals in the session's IntervalStyle, ``{1,NULL}``, jsonb as PostgreSQL prints it, timestamptz
in the session time zone, bytea as ``\\x`` hex under the default ``bytea_output``). So the rule
here is to parse nothing: ``text_loaders`` replaces every psycopg loader with its plain text
loader (the C one), and the driver hands over the server's bytes decoded as UTF-8. Checked cell by
cell against ``COPY ... TO STDOUT`` in tests/sources/test_conformance_postgres.py.

Deliberately not here: connecting, fetching, CSV quoting.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["TYPE_NAMES_SQL", "use_text_loaders"]

# One round trip names every result column in PostgreSQL's own DDL spelling
# (``numeric(3,1)``, ``character varying(40)``, ``timestamp(3) with time zone``, ``integer[]``).
TYPE_NAMES_SQL = (
    "SELECT format_type(t.oid, t.mod) FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY AS t(oid, mod, n) ORDER BY t.n"
)


def use_text_loaders(adapters: Any) -> None:
    """Make ``adapters`` (a psycopg connection's or cursor's) load every type as its text."""
    import psycopg.postgres
    from psycopg.types.string import TextLoader

    adapters.register_loader(0, TextLoader)  # any OID without a loader of its own (enums, domains...)
    for info in psycopg.postgres.types:
        adapters.register_loader(info.oid, TextLoader)
        if info.array_oid:
            adapters.register_loader(info.array_oid, TextLoader)


_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALPHABETS = {
    # The characters each output function can print (CSV quoting skips the scan for a column whose
    # alphabet cannot hold the delimiter; '"', CR and LF are in none of them). Letters cover
    # NaN / Infinity / infinity / BC; dates and times also print zone offsets and spaces.
    **dict.fromkeys(("smallint", "integer", "bigint", "oid"), _DIGITS + "-"),
    "numeric": _DIGITS + "-.NaInfity",
    **dict.fromkeys(("real", "double precision"), _DIGITS + "-+.eNaInfity"),
    "boolean": "tf",
    "uuid": _DIGITS + "abcdef-",
    "bytea": _DIGITS + "abcdef\\x",
    **dict.fromkeys(
        (
            "date",
            "timestamp without time zone",
            "timestamp with time zone",
            "time without time zone",
            "time with time zone",
        ),
        _DIGITS + "-+:. " + _LETTERS,
    ),
}


def text_alphabet(sql_type: str) -> str | None:
    """Every character the output function of a ``sql_type`` value can print; None: anything."""
    # format_type spellings: "numeric(3,1)", "timestamp(3) with time zone", "integer[]" (no entry).
    return _ALPHABETS.get(re.sub(r"\(\d+(,\d+)?\)", "", sql_type).strip())
