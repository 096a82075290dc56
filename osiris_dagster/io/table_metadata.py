"""Arrow schema -> Dagster's standard column-schema metadata (`dagster/column_schema`)."""

from __future__ import annotations

import pyarrow as pa
from dagster import TableColumn, TableSchema


def column_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(columns=[TableColumn(name=field.name, type=str(field.type)) for field in schema])
