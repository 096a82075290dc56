"""IO manager of written assets (a CSV file, a Supabase table): materialization metadata only.

The writer has already put the rows where they belong; this records `rows_written`,
`dagster/row_count`, where (path, absolute `dagster/uri`, `dagster/table_name`), bytes and the
step's artifact paths (a Markdown list), so every written asset's page in the UI answers "what
landed where". The column schema comes from the asset body, which holds the extracted tables.
"""

from __future__ import annotations

import dagster as dg

from osiris_dagster.io.table_metadata import artifacts_markdown
from osiris_dagster.project import ProjectLayout
from osiris_dagster.step_run import WrittenTarget


class WrittenTargetIOManager(dg.ConfigurableIOManager):
    project_dir: str | None = None

    def handle_output(self, context: dg.OutputContext, obj: WrittenTarget) -> None:
        project = ProjectLayout.discover(self.project_dir)
        metadata: dict[str, dg.MetadataValue] = {
            "rows_written": dg.MetadataValue.int(obj.rows_written),
            "dagster/row_count": dg.MetadataValue.int(obj.rows_written),
            "dagster/storage_kind": dg.MetadataValue.text(obj.storage_kind),
            # A file: its absolute file URI; a table: the writer's URI (postgres://host/db/schema.table).
            "dagster/uri": dg.MetadataValue.text(project.uri(obj.path) if obj.path is not None else obj.uri),
        }
        if obj.path is not None:
            metadata["path"] = dg.MetadataValue.path(project.relative(obj.path))
        if obj.bytes is not None:
            metadata["bytes"] = dg.MetadataValue.int(obj.bytes)
        # A table's qualified name; a file's project-relative path (how a query engine names it).
        table_name = obj.table_name or (project.relative(obj.path) if obj.path is not None else None)
        if table_name is not None:
            metadata["dagster/table_name"] = dg.MetadataValue.text(table_name)
        step_id = context.definition_metadata.get("osiris/step_id")
        if step_id:
            artifacts = project.session_dir(context.run_id) / "artifacts" / str(step_id)
            if artifacts.is_dir():
                metadata["artifacts"] = artifacts_markdown(
                    sorted(project.relative(p) for p in artifacts.rglob("*") if p.is_file())
                )
        metadata.update(
            {
                key: dg.MetadataValue.text(str(v)) if not isinstance(v, dg.MetadataValue) else v
                for key, v in obj.metadata.items()
            }
        )
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> WrittenTarget:
        raise dg.Failure(
            f"{context.upstream_output.asset_key.to_user_string() if context.upstream_output else 'this asset'} "
            "is a written asset (a file or table outside Dagster): depend on it with `deps`, not as an input"
        )
