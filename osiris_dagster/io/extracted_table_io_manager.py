"""IO manager of extracted-table assets: staged Arrow files and their materialization metadata.

The extracting step streams its rows straight into the staging file (a table is never held in
memory, so there is nothing to "store" here); this IO manager records what was staged —
`rows_read`, `dagster/row_count`, `dagster/column_schema`, path, bytes — and hands downstream
steps an `ExtractedTable` that they read batch by batch. Paths in metadata are relative to the
project, so a sandboxed run's materialization reads the same as a local one's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from osiris_dagster.io.table_metadata import column_schema
from osiris_dagster.project import ProjectLayout

if TYPE_CHECKING:
    from osiris_dagster.staging import ExtractedTable


class ExtractedTableIOManager(dg.ConfigurableIOManager):
    project_dir: str | None = None

    @property
    def project(self) -> ProjectLayout:
        return ProjectLayout.discover(self.project_dir)

    def handle_output(self, context: dg.OutputContext, obj: ExtractedTable) -> None:
        relative = self.project.relative(obj.path)
        context.add_output_metadata(
            {
                "rows_read": dg.MetadataValue.int(obj.rows),
                "dagster/row_count": dg.MetadataValue.int(obj.rows),
                "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(obj.schema)),
                "dagster/storage_kind": dg.MetadataValue.text("arrow"),
                "path": dg.MetadataValue.path(relative),
                "bytes": dg.MetadataValue.int(obj.bytes),
            }
        )

    def load_input(self, context: dg.InputContext) -> ExtractedTable:
        from osiris_dagster.staging import open_staged

        metadata = context.upstream_output.definition_metadata if context.upstream_output else {}
        staged = metadata.get("osiris/staging_path")
        if staged is None:
            raise dg.Failure(f"{context.asset_key.to_user_string()} is not an extracted table of this product")
        path = self.project.resolve(str(staged))
        if not path.exists():
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} has not been extracted yet in this project "
                f"(no staged file at {self.project.relative(path)}): materialize it first"
            )
        return open_staged(path)
