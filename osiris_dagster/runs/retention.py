"""Which staged files stay: the retention rule applied at every run start.

Rule (docs/runs.md): for every extracted-table asset of the project, keep

* the staged file recorded on the asset's **latest materialization** — the one a written asset
  re-materialized on its own will read; and
* every staged file of a run that is **still alive** (its owner record exists and its process
  lives, ``runs.owner``) — including the hard links a writer-only run pins to read from;

and delete every other staged file and scratch file. A run's owner record exists from before
its first step until its end, so a staged file without a live owner belongs to a finished or
dead run. Cost: one batched query for the latest materializations of all staged assets and one
directory listing per asset (a 300-table project prunes in a few milliseconds).

Deliberately not here: deleting files (``staging.prune_staged``), or judging one run
(``runs.owner``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from osiris_dagster.project import ProjectLayout
from osiris_dagster.runs.owner import read_owners
from osiris_dagster.spec.model import to_python_name

if TYPE_CHECKING:
    from dagster import DagsterInstance

__all__ = ["prune_staging"]


def prune_staging(project: ProjectLayout, instance: DagsterInstance, *, current_run_id: str) -> list[Path]:
    """Apply the retention rule to every staged asset of the project; returns the removed files."""
    import dagster as dg

    from osiris_dagster.staging import prune_staged, staged_run_id

    asset_dirs = [p for p in project.staging_dir.glob("*/*") if p.is_dir()] if project.staging_dir.is_dir() else []
    if not asset_dirs:
        return []
    keys = {folder: dg.AssetKey([folder.parent.name, to_python_name(folder.name)]) for folder in asset_dirs}
    latest = instance.get_latest_materialization_events(list(set(keys.values())))
    live = {owner.run_id for owner in read_owners(project) if not owner.is_dead()} | {current_run_id}
    removed: list[Path] = []
    for folder, key in keys.items():
        keep = set(live)
        event = latest.get(key)
        if event is not None:
            keep.add(event.run_id)
            recorded = event.asset_materialization.metadata.get("path") if event.asset_materialization else None
            if recorded is not None:
                run_id = staged_run_id(Path(str(getattr(recorded, "value", recorded))))
                if run_id:
                    keep.add(run_id)
        removed += prune_staged(folder, keep)
    return removed
