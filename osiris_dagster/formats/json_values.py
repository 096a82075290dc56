"""Arrow batches as JSON-safe rows for PostgREST (the Supabase REST transport's request bodies).

Staged tables are text (each cell as the source database printed it), so their values go out as
JSON strings unchanged and PostgREST reads each with the column's input function: no conversion
runs. One exception: a PostgreSQL ``json``/``jsonb`` source column goes out as the JSON value
itself (``json.loads`` of its text), because PostgREST stores a JSON *string* sent to a json
column as a JSON string. The value is the same (jsonb equality holds), but over REST ``json``
loses its original whitespace and key order and numbers pass through a float (``1.50`` ->
``1.5``); the direct transport (COPY) keeps the text exactly. The typed rules below serve typed
Arrow batches handed to the writer directly.

PostgREST parses each JSON value with the target column's input function, so a value only has to
be a string Postgres itself would accept for that column; exactness matters more than JSON
"niceness":

* decimal -> string (``"12.50"``): a JSON number would go through a float somewhere between
  here and Postgres and lose digits; ``numeric`` parses the string exactly;
* date / time / timestamp -> ISO 8601 strings (with the offset when the Arrow type has a zone);
* binary -> ``"\\x<hex>"``, the ``bytea`` hex input format;
* float NaN / ±inf -> ``"NaN"`` / ``"Infinity"`` / ``"-Infinity"`` strings: JSON has no such
  numbers, and Postgres ``real`` / ``double precision`` accept these spellings, so nothing is lost
  (Osiris turned NaN into NULL, which silently changes the data);
* duration -> ``"<n> microseconds"`` (``interval`` input);
* NULL -> ``null``; ints, bools and strings as they are.

Only columns that need a conversion pay for one: the plan is built once per schema. Deliberately
not here: HTTP, batching, retries (``supabase_rest``), the COPY path, which never goes through JSON.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa

__all__ = ["JsonRowEncoder", "json_safe_value"]

Converter = Callable[[Any], Any]


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _decimal(value: decimal.Decimal) -> str:
    # format(..., "f") never yields an exponent ("1E+2"), which numeric would accept but a reader
    # comparing strings would not expect.
    return format(value, "f")


def _bytes(value: bytes) -> str:
    return "\\x" + bytes(value).hex()


def _temporal(value: dt.date | dt.time) -> str:
    return value.isoformat()


def _duration(value: dt.timedelta) -> str:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return f"{micros} microseconds"


def _converter(arrow_type: pa.DataType) -> Converter | None:
    """The conversion a column of this type needs, or None when its Python values are JSON already."""
    if pa.types.is_floating(arrow_type):
        return _float
    if pa.types.is_decimal(arrow_type):
        return _decimal
    if (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
    ):
        return _bytes
    if pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type) or pa.types.is_time(arrow_type):
        return _temporal
    if pa.types.is_duration(arrow_type):
        return _duration
    if pa.types.is_dictionary(arrow_type):
        return _converter(arrow_type.value_type)
    return None


def _field_converter(field: pa.Field, schema: pa.Schema) -> Converter | None:
    from osiris_dagster.staging import source_dialect, sql_type

    if source_dialect(schema) == "postgresql" and sql_type(field) in ("json", "jsonb"):
        return json.loads
    return _converter(field.type)


def json_safe_value(value: Any) -> Any:
    """One Python value as JSON-safe data, for callers outside a typed batch (e.g. filter values)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, decimal.Decimal):
        return _decimal(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return _bytes(bytes(value))
    if isinstance(value, dt.timedelta):
        return _duration(value)
    if isinstance(value, dt.date | dt.time):
        return _temporal(value)
    return str(value)


class JsonRowEncoder:
    """Turns record batches of one schema into lists of JSON-safe dicts."""

    def __init__(self, schema: pa.Schema) -> None:
        self.columns = list(schema.names)
        self._plan = [(name, _field_converter(field, schema)) for name, field in zip(schema.names, schema, strict=True)]

    def rows(self, batch: pa.RecordBatch) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = batch.to_pylist()
        conversions = [(name, convert) for name, convert in self._plan if convert is not None]
        if conversions:
            for row in rows:
                for name, convert in conversions:
                    value = row[name]
                    if value is not None:
                        row[name] = convert(value)
        return rows
