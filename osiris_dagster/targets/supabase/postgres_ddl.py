"""The Postgres table a Supabase write creates when asked to: staged schema -> CREATE TABLE.

Staged columns are text carrying their source SQL type (``staging.SQL_TYPE_KEY``), and the rows
are loaded through each column's Postgres input function, so the column type decides how the
source's text is read back. The type comes from the source SQL type:

* PostgreSQL sources: the type as the source printed it (``format_type``: ``numeric(3,1)``,
  ``timestamp(3) with time zone``, ``integer[]``) is already Postgres DDL. A type that exists only
  in the source database (an enum, a domain, an extension's type) fails the CREATE with
  Postgres's own "type ... does not exist": create it in the target first;
* MySQL/MariaDB sources: ``mysql_postgres_type`` below (``DATETIME(3)`` -> ``timestamp(3)``,
  ``TIME`` -> ``interval`` since MySQL TIME spans -838:59:59..838:59:59, ``BIT(n)`` -> ``bigint`` /
  ``numeric(20,0)``, unsigned integers one size up, binary strings -> ``bytea``, ENUM/SET/JSON
  -> ``text``);
* SQLite sources: by declared-type affinity (``INT`` -> ``bigint``, ``REAL``/``FLOA``/``DOUB`` ->
  ``double precision``, ``DECIMAL(p,s)`` -> ``numeric(p,s)``, ``BLOB`` -> ``bytea``), then by the
  declared name (``BOOLEAN`` -> ``boolean``, ``DATETIME`` -> ``timestamp``, ``DATE`` -> ``date``),
  else ``text``.

Columns without a source SQL type (typed Arrow batches handed over directly) map by Arrow type:

=====================================  ==========================
Arrow                                  Postgres
=====================================  ==========================
int8, int16 / uint8                    smallint
int32 / uint16                         integer
int64 / uint32                         bigint
uint64                                 numeric(20,0) (does not fit bigint)
float16, float32                       real
float64                                double precision
decimal128(p,s) / decimal256(p,s)      numeric(p,s)
string, large_string                   text
binary, large_binary, fixed binary     bytea
bool                                   boolean
date32, date64                         date
timestamp (no zone) / (with zone)      timestamp / timestamptz
time32, time64                         time
duration                               interval
null                                   text
anything else (lists, structs, ...)    jsonb
=====================================  ==========================

Primary-key columns are declared ``NOT NULL`` by the key itself. The plan is
``CREATE TABLE IF NOT EXISTS``: running it against an existing table changes nothing, so a
concurrent creator cannot make the write fail. Deliberately not here: ALTERing an existing table
to fit a new schema (a changed schema is the user's decision), executing anything (the caller
runs the SQL on its own connection, inside its own transaction).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pyarrow as pa

__all__ = [
    "column_type",
    "create_table_sql",
    "mysql_postgres_type",
    "postgres_type",
    "qualified_name",
    "quote_identifier",
    "sqlite_postgres_type",
]


def quote_identifier(name: str) -> str:
    """A Postgres identifier, always quoted: column names from a source keep their exact spelling."""
    return '"' + name.replace('"', '""') + '"'


def qualified_name(schema: str, table: str) -> str:
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


def postgres_type(arrow_type: pa.DataType) -> str:
    t = arrow_type
    if pa.types.is_dictionary(t):
        return postgres_type(t.value_type)
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "integer"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "bigint"
    if pa.types.is_uint64(t):
        return "numeric(20,0)"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "real"
    if pa.types.is_float64(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return "text"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytea"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_duration(t):
        return "interval"
    return "jsonb"


_MYSQL_INTEGERS = {
    # MySQL type: (signed, unsigned) Postgres type
    "TINYINT": ("smallint", "smallint"),
    "SMALLINT": ("smallint", "integer"),
    "MEDIUMINT": ("integer", "integer"),
    "INT": ("integer", "bigint"),
    "BIGINT": ("bigint", "numeric(20,0)"),
}
_MYSQL_PLAIN = {
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "DATE": "date",
    "YEAR": "smallint",
    "NULL": "text",
    "ENUM": "text",
    "SET": "text",
    "JSON": "text",
    "GEOMETRY": "bytea",
}


def mysql_postgres_type(sql_type: str) -> str:
    """Postgres DDL for a MySQL/MariaDB column type as ``formats.mysql_text`` names it."""
    t = sql_type.upper().strip()
    unsigned = t.endswith(" UNSIGNED")
    base = t.removesuffix(" UNSIGNED")
    name, _, args = base.partition("(")
    args = args.rstrip(")")
    if name in _MYSQL_INTEGERS:
        return _MYSQL_INTEGERS[name][1 if unsigned else 0]
    if name == "DECIMAL":
        return f"numeric({args})" if args else "numeric"
    if name in ("DATETIME", "TIMESTAMP"):
        return f"timestamp({args})" if args else "timestamp"
    if name == "TIME":
        return "interval"
    if name == "BIT":
        return "bigint" if args and int(args) < 64 else "numeric(20,0)"
    if name in _MYSQL_PLAIN:
        return _MYSQL_PLAIN[name]
    if name.endswith("BLOB") or name in ("BINARY", "VARBINARY"):
        return "bytea"
    if name == "VARCHAR" and args:
        return f"varchar({args})"
    if name.endswith("TEXT") or name in ("CHAR", "VARCHAR"):
        # CHAR -> text: MySQL strips CHAR's trailing spaces, Postgres char(n) would pad them back.
        return "text"
    raise ValueError(f"MySQL type {sql_type} has no Postgres mapping")


_SQLITE_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def sqlite_postgres_type(sql_type: str) -> str:
    """Postgres DDL for a SQLite declared type (SQLite's own affinity rules, in their order)."""
    t = sql_type.upper()
    if "INT" in t:
        return "bigint"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "text"
    if "BLOB" in t:
        return "bytea"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "double precision"
    match = _SQLITE_DECIMAL.search(t)
    if match:
        return f"numeric({match.group(1)},{match.group(2) or 0})"
    # NUMERIC affinity: the declared name says what the application stores there.
    if "BOOL" in t:
        return "boolean"
    if "DATETIME" in t or "TIMESTAMP" in t:
        return "timestamp"
    if "DATE" in t:
        return "date"
    return "text"  # SQLite may hold any value in a column of another declared type


def column_type(field: pa.Field, dialect: str) -> str:
    """The Postgres type of one staged column (see the module docstring)."""
    from osiris_dagster.staging import sql_type

    declared = sql_type(field)
    if not declared:
        return postgres_type(field.type)
    if dialect == "postgresql":
        return declared
    if dialect in ("mysql", "mariadb"):
        return mysql_postgres_type(declared)
    if dialect == "sqlite":
        return sqlite_postgres_type(declared)
    return "text"


def create_table_sql(schema: str, table: str, arrow_schema: pa.Schema, primary_key: Sequence[str]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the Arrow schema, with the primary key (if any)."""
    missing = [column for column in primary_key if column not in arrow_schema.names]
    if missing:
        raise ValueError(f"primary_key column(s) {', '.join(missing)} are not in the written table's columns")
    from osiris_dagster.staging import source_dialect

    dialect = source_dialect(arrow_schema)
    lines = [f"  {quote_identifier(field.name)} {column_type(field, dialect)}" for field in arrow_schema]
    if primary_key:
        lines.append(f"  PRIMARY KEY ({', '.join(quote_identifier(c) for c in primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {qualified_name(schema, table)} (\n" + ",\n".join(lines) + "\n);\n"
