"""The Postgres table a Supabase write creates when asked to: Arrow schema -> CREATE TABLE.

Mapping (the staged Arrow types are exact, so the table is too):

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

from collections.abc import Sequence

import pyarrow as pa

__all__ = ["create_table_sql", "postgres_type", "qualified_name", "quote_identifier"]


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


def create_table_sql(schema: str, table: str, arrow_schema: pa.Schema, primary_key: Sequence[str]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the Arrow schema, with the primary key (if any)."""
    missing = [column for column in primary_key if column not in arrow_schema.names]
    if missing:
        raise ValueError(f"primary_key column(s) {', '.join(missing)} are not in the written table's columns")
    lines = [f"  {quote_identifier(field.name)} {postgres_type(field.type)}" for field in arrow_schema]
    if primary_key:
        lines.append(f"  PRIMARY KEY ({', '.join(quote_identifier(c) for c in primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {qualified_name(schema, table)} (\n" + ",\n".join(lines) + "\n);\n"
