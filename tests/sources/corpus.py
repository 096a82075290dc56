"""The value corpus of the conformance suite: every type family each server offers, at its edges.

Each column is ``(definition, [SQL literals])``; row ``i`` holds the ``i``-th literal of every
column (NULL past a column's list, so every column also has NULLs). Expected text never comes from
here: the tests read it back from the server (raw text protocol / ``COPY ... TO STDOUT``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Column = tuple[str, Sequence[str]]

MARIADB_COLUMNS: list[Column] = [
    ("ti TINYINT", ["-128", "127", "0"]),
    ("tu TINYINT UNSIGNED", ["0", "255"]),
    ("si SMALLINT", ["-32768", "32767"]),
    ("mi MEDIUMINT", ["-8388608", "8388607"]),
    ("mu MEDIUMINT UNSIGNED", ["16777215"]),
    ("i INT", ["-2147483648", "2147483647"]),
    ("iu INT UNSIGNED", ["4294967295"]),
    ("bi BIGINT", ["-9223372036854775808", "9223372036854775807"]),
    ("bu BIGINT UNSIGNED", ["18446744073709551615", "0"]),
    ("flag BOOLEAN", ["1", "0", "-1"]),
    (
        "d65 DECIMAL(65,30)",
        [
            "-0.000000000000000000000000000001",
            "0",
            "99999999999999999999999999999999999.999999999999999999999999999999",
        ],
    ),
    ("d31 DECIMAL(3,1)", ["7.9", "8", "-0.5"]),
    ("d10 DECIMAL(10,0)", ["-1234567890", "0"]),
    ("du DECIMAL(5,2) UNSIGNED", ["0.01", "999.99"]),
    ("f FLOAT", ["3.40282e38", "-1.17549e-38", "0.1", "1.1", "1e-45"]),
    (
        "dbl DOUBLE",
        ["1.7976931348623157e308", "2.2250738585072014e-308", "5e-324", "0.1", "1e20", "123456789.123", "-0"],
    ),
    ("dte DATE", ["'1000-01-01'", "'9999-12-31'", "'0000-00-00'", "'2024-02-00'", "'2024-00-15'"]),
    ("dt0 DATETIME", ["'0000-00-00 00:00:00'", "'2024-02-29 23:59:59'"]),
    ("dt3 DATETIME(3)", ["'2024-01-01 00:00:00.5'", "'2024-00-00 00:00:00'", "'2024-01-01 00:00:00.999'"]),
    ("dt6 DATETIME(6)", ["'9999-12-31 23:59:59.999999'", "'1000-01-01 00:00:00.000001'"]),
    ("ts2 TIMESTAMP(2) NULL", ["'1970-01-02 00:00:01.01'", "'2038-01-19 03:14:07.99'", "'0000-00-00 00:00:00'"]),
    ("tm TIME", ["'-838:59:59'", "'838:59:59'", "'00:00:00'", "'-00:00:01'"]),
    ("tm3 TIME(3)", ["'-838:59:59.999'", "'123:45:06.5'"]),
    ("y YEAR", ["1901", "2155", "0", "2024"]),
    ("ch CHAR(10)", ["'ab'", "''", "' lead'"]),
    (
        "vc VARCHAR(100)",
        [
            "'😀 héllo 日本'",
            "'a,b'",
            "'quo\"te'",
            "'line\\nbreak'",
            "'cr\\rlf\\r\\n'",
            "'tab\\there'",
            "' edge '",
            "'nul\\0byte'",
            "'semi;colon'",
            "''",
            "'NULL'",
        ],
    ),
    ("tx TEXT", ["REPEAT('x,', 500)", "'\"'"]),
    ("en ENUM('a','b,c','')", ["'a'", "'b,c'", "''"]),
    ("st SET('x','y','z')", ["'x,z'", "''"]),
    ("js JSON", ["'{\"a\": 1.50}'", "'null'", "'[1, \"x,y\"]'", "'\"str\"'"]),
    ("b1 BIT(1)", ["b'1'", "b'0'"]),
    ("b64 BIT(64)", ["b'1111111111111111111111111111111111111111111111111111111111111111'", "b'1010'"]),
    ("bn BINARY(4)", ["x'00ff0a'", "x''"]),
    ("vb VARBINARY(10)", ["x''", "x'deadbeef'"]),
    ("bl BLOB", ["x'00'", "x''", "x'5c78'"]),
    ("uid UUID", ["'123e4567-e89b-12d3-a456-426614174000'"]),
    ("ip INET6", ["'::1'", "'192.0.2.1'"]),
    ("geo GEOMETRY", ["ST_GeomFromText('POINT(1 1)')"]),
]

POSTGRES_COLUMNS: list[Column] = [
    ("si smallint", ["-32768", "32767"]),
    ("i integer", ["-2147483648", "2147483647"]),
    ("bi bigint", ["-9223372036854775808", "9223372036854775807"]),
    ("n numeric", ["'1e-30'", "'NaN'", "'123456789012345678901234567890.5'", "'-0.000'", "'1.50'"]),
    ("n31 numeric(3,1)", ["7.9", "8", "-0.5"]),
    ("nneg numeric(1000,500)", ["'1e-500'", "0"]),
    ("r real", ["'3.4028235e38'", "'1.4e-45'", "'NaN'", "'Infinity'", "'-Infinity'", "0.1"]),
    ("d double precision", ["'1.7976931348623157e308'", "'5e-324'", "'NaN'", "'-Infinity'", "0.1", "'-0'"]),
    ("m money", ["'$1.50'", "'-92233720368547758.08'"]),
    ("b boolean", ["true", "false"]),
    ("dte date", ["'infinity'", "'-infinity'", "'4713-01-01 BC'", "'5874897-12-31'", "'2024-02-29'"]),
    ("ts3 timestamp(3)", ["'infinity'", "'2024-01-01 00:00:00.5'", "'294276-12-31 23:59:59.999'"]),
    ("ts timestamp", ["'-infinity'", "'2000-01-01 00:00:00.000001'"]),
    ("tz timestamptz", ["'2024-06-01 12:00:00+00'", "'infinity'", "'1900-01-01 00:00:00+00'"]),
    ("tm time", ["'24:00:00'", "'00:00:00.000001'"]),
    ("tmz timetz", ["'12:00:00+05:30'"]),
    ("iv interval", ["'-1 mons +3 days -00:00:01.5'", "'1 year 2 mons'", "'-178000000 years'", "'00:00:00'"]),
    ("c char(5)", ["'ab'", "''"]),
    (
        "vc varchar(40)",
        [
            "'😀 héllo 日本'",
            "'a,b'",
            "'quo\"te'",
            "E'line\\nbreak'",
            "E'cr\\rlf\\r\\n'",
            "E'tab\\there'",
            "' edge '",
            "'\\.'",
            "''",
            "'NULL'",
        ],
    ),
    ("tx text", ["repeat('x,', 500)"]),
    ("js json", ["'{\"a\": 1.50}'", "'null'", "'[1, \"x,y\"]'"]),
    ("jb jsonb", ['\'{"a": 1.50, "b": [1e2, 1.0]}\'', "'null'", "'\"s\"'"]),
    ("ba bytea", ["'\\x00ff'", "''", "'\\x5c78'"]),
    ("u uuid", ["'123e4567-e89b-12d3-a456-426614174000'"]),
    ("ip inet", ["'192.168.0.1/24'", "'::1'"]),
    ("cidr_ cidr", ["'10.0.0.0/8'"]),
    ("mac macaddr", ["'08:00:2b:01:02:03'"]),
    ("arr integer[]", ["'{1,NULL,3}'", "'{}'", "'{{1,2},{3,4}}'"]),
    ("tarr text[]", ["ARRAY['a,b', NULL, 'q\"', '']"]),
    ("e mood", ["'happy'", "'sad'"]),
    ("bits bit varying(8)", ["B'1010'"]),
    ("pt point", ["'(1.5,-2)'"]),
    ("rng int4range", ["'[1,5)'", "'empty'"]),
    ("xm xml", ["'<a>x</a>'"]),
]
POSTGRES_SETUP = "CREATE TYPE mood AS ENUM ('happy', 'sad')"


def rows_sql(table: str, columns: Sequence[Column]) -> tuple[str, str]:
    """``(CREATE TABLE, INSERT)`` for the corpus: an ``id`` then every column."""
    create = f"CREATE TABLE {table} (id INT PRIMARY KEY, " + ", ".join(d for d, _ in columns) + ")"
    height = max(len(values) for _, values in columns) + 1  # the last row is all NULL
    rows = []
    for i in range(height):
        cells = [values[i] if i < len(values) else "NULL" for _, values in columns]
        rows.append(f"({i + 1}, " + ", ".join(cells) + ")")
    return create, f"INSERT INTO {table} VALUES " + ", ".join(rows)


def distinct_cells(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """How many distinct (column, value) pairs the corpus holds, NULL included once per column."""
    return len({(name, value) for row in rows for name, value in zip(names, row, strict=True) if name != "id"})
