"""IO manager of extracted-table assets: staged Arrow files and their materialization metadata.

The extracting step streams its rows straight into the staging file (a table is never held in
memory, so there is nothing to "store" here); this IO manager records what was staged —
`rows_read`, `dagster/row_count`, `dagster/column_schema`, `dagster/table_name`, path (and its
absolute `dagster/uri`), bytes — and hands downstream
steps an `ExtractedTable` that they read batch by batch. Paths in metadata are relative to the
project, so a sandboxed run's materialization reads the same as a local one's.

Which staged file a written asset reads (run isolation, docs/runs.md): the one of the extraction
it depends on. When the extraction ran in the same run (or in the run this one re-executes),
that is the file named by that run's id — exactly the `path` its materialization recorded; when
only the written asset runs, the `path` recorded on the extraction's latest materialization.
Never a path shared by runs, so a concurrent run can neither replace nor remove it: the latest
materialization's file is hard-linked under this run's name first, which the pruning rule keeps
while this run is alive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER

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
                "dagster/uri": dg.MetadataValue.text(self.project.uri(obj.path)),
                "bytes": dg.MetadataValue.int(obj.bytes),
                # The source table (when the step reads one): the asset's definition says which.
                **{
                    key: dg.MetadataValue.text(str(value))
                    for key, value in context.definition_metadata.items()
                    if key == "dagster/table_name"
                },
            }
        )

    def load_input(self, context: dg.InputContext) -> ExtractedTable:
        from osiris_dagster.staging import STAGED_SUFFIX, open_staged

        upstream = context.upstream_output
        metadata = upstream.definition_metadata if upstream else {}
        folder = metadata.get("osiris/staging_dir")
        name = context.asset_key.to_user_string()
        if folder is None:
            raise dg.Failure(f"{name} is not an extracted table of this product")
        asset_dir = self.project.resolve(str(folder))
        source_run = _source_run_id(upstream)
        if source_run is not None:
            path, origin = asset_dir / f"{source_run}{STAGED_SUFFIX}", f"run {source_run}"
        else:
            path, origin = self._latest_extraction(context, name)
        if not path.exists():
            raise dg.Failure(
                f"{name}: the staged table of {origin} is gone ({self.project.relative(path)}; old extractions are "
                "pruned, see docs/runs.md): materialize the extraction again"
            )
        return open_staged(_pin(path, asset_dir / f"{context.step_context.run_id}{STAGED_SUFFIX}"))

    def _latest_extraction(self, context: dg.InputContext, name: str) -> tuple[Path, str]:
        """The staged file recorded on the extraction's latest materialization."""
        event = context.instance.get_latest_materialization_event(context.asset_key)
        materialization = event.asset_materialization if event else None
        recorded = materialization.metadata.get("path") if materialization else None
        if event is None or recorded is None:
            raise dg.Failure(f"{name} has not been extracted yet in this project: materialize it first")
        return self.project.resolve(str(getattr(recorded, "value", recorded))), f"run {event.run_id}"


def _pin(path: Path, pinned: Path) -> Path:
    """Another run's staged file, hard-linked under this run's name before it is read.

    The retention rule keeps a live run's files, so a run starting meanwhile cannot remove the
    table this run reads (a link costs no copy; the staged file is never modified in place).
    """
    if path == pinned:
        return path
    try:
        os.link(path, pinned)
    except FileExistsError:
        pass  # pinned already (a second input from the same extraction)
    except OSError:
        return path  # no hard links here (another filesystem): read it where it is
    return pinned


def _source_run_id(upstream: dg.OutputContext | None) -> str | None:
    """The run that produced the upstream output in this run's lineage, if it ran in one."""
    if upstream is None:
        return None
    try:
        run_id = upstream.run_id
    except DagsterInvariantViolationError:
        return None
    # Dagster's placeholder for an asset loaded from outside this run (only the writer selected).
    return None if run_id == RUN_ID_PLACEHOLDER else run_id
