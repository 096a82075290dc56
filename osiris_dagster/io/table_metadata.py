"""Arrow schema -> Dagster's standard column-schema metadata (`dagster/column_schema`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import TableColumn, TableSchema

if TYPE_CHECKING:
    import pyarrow as pa


def column_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(columns=[TableColumn(name=field.name, type=str(field.type)) for field in schema])
