"""What a driver receives when its step runs, and what a write driver hands back.

Drivers see a `StepRun`: the rendered config, the resolved connection, where to stage, the
session log, a logger. They never touch Dagster, so they run the same under any executor, in a
sandbox, or in a benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osiris_dagster.connections import Connection
from osiris_dagster.progress import RowProgress
from osiris_dagster.project import ProjectLayout
from osiris_dagster.session.session_log import SessionLog
from osiris_dagster.spec.model import Pipeline, Step


@dataclass
class StepRun:
    pipeline: Pipeline
    step: Step
    config: dict[str, Any]
    connection: Connection | None
    project: ProjectLayout
    session: SessionLog
    staging_path: Path
    log: logging.Logger  # Dagster's context.log in a run: lines reach the UI's run log and the console
    run_id: str | None = None  # names the step's scratch files (runs.scratch)
    # CSV files write steps of this run will write from this read step's table: the extraction
    # prepares them while it runs (targets.csv_prepared).
    csv_plans: tuple[Any, ...] = ()

    def progress(self, what: str) -> RowProgress:
        """A progress reporter for this step's rows, logging at most every 5 s."""
        return RowProgress(self.log, f"{self.step_id}: {what}")

    @property
    def step_id(self) -> str:
        return self.step.id

    def artifact(self, name: str, content: bytes | str, artifact_type: str) -> Path:
        """Write an artifact under `artifacts/<step_id>/` and announce it."""
        path = self.session.write_artifact(self.step_id, name, content)
        self.session.event(
            "artifact_created",
            step_id=self.step_id,
            artifact_type=artifact_type,
            path=self.project.relative(path),
            size_bytes=path.stat().st_size,
        )
        return path


@dataclass(frozen=True)
class WrittenTarget:
    """Where a write step put its rows: recorded as the written asset's materialization."""

    uri: str  # project-relative path of a file, or a table URI such as postgres://host/db/schema.table
    rows_written: int
    storage_kind: str
    bytes: int | None = None
    path: Path | None = None
    table_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Rows the write was meant to land, when not all extracted rows (an incremental append writes
    # only rows past its committed cursor); the row-count check compares rows_written with it.
    rows_expected: int | None = None
