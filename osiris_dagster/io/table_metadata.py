"""Dagster's standard table metadata for extracted and written assets.

`dagster/column_schema` shows each column's type in the SOURCE's SQL terms (`DECIMAL(3,1)`,
`DATETIME(3)`, `varchar(40)`): that is what a user wrote in their DDL and what they search for.
The staged Arrow schema carries it per field as metadata under `osiris.sql_type` (set by staging,
the one place that knows the source's types); the Arrow type is kept as the column's description,
a secondary detail, and is the type only when a field has no SQL type (a source whose driver
does not report one).

`artifacts_markdown` renders a step's artifact paths as a Markdown list, readable on the asset
page, where a JSON value would show as a raw blob.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from dagster import MetadataValue, TableColumn, TableSchema

if TYPE_CHECKING:
    import pyarrow as pa


def column_schema(schema: pa.Schema) -> TableSchema:
    # Imported here: staging imports pyarrow, which definitions must not pay for at load time.
    from osiris_dagster.staging import sql_type

    return TableSchema(
        columns=[
            TableColumn(
                name=field.name,
                type=sql_type(field) or str(field.type),
                # No nullability constraint: staging does not record the source's NOT NULL, and
                # every staged field is nullable, so stating one would be wrong for NOT NULL columns.
                description=f"Arrow: {field.type}",
            )
            for field in schema
        ]
    )


def artifacts_markdown(paths: Iterable[str]) -> MetadataValue:
    return MetadataValue.md("\n".join(f"- `{path}`" for path in paths))
