"""Where an incremental step's committed cursor lives: Dagster's own event log.

There is no state file. The written asset (the CSV) of an incremental step records, in each
materialization's metadata, `incremental/state` = {"cursor": <JSON cursor>, "bytes": <file
size>, "rows": <rows in the file>}. The committed state is that of the newest materialization
whose **run succeeded**; materializations of failed (or still running) runs are ignored, so a
failed run never advances the cursor: the next run re-reads from the committed cursor and
appends after the committed bytes (`targets.csv_append`), with no gap and no duplicate. It holds
across restarts and processes because Dagster's storage is the only source of truth.

The extracted-table asset reads from the smallest committed cursor among the writers that need
it (all of them must have committed, else it reads everything), and each writer appends only the
rows above its own committed cursor, so re-materializing a writer alone cannot append twice.

Only `filesystem.csv_writer` can consume an incremental step; anything else is refused when
definitions load.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from osiris_dagster.errors import PipelineSpecError
from osiris_dagster.sources.incremental import CursorValue, decode_cursor
from osiris_dagster.spec.model import Pipeline, Step

STATE_KEY = "incremental/state"
CURSOR_FROM_KEY = "incremental/cursor_from"
CURSOR_TO_KEY = "incremental/cursor_to"
APPENDING_WRITERS = frozenset({"filesystem.csv_writer"})
_PAGE = 50


@dataclass(frozen=True)
class CommittedAppend:
    """What the last successful run left in a written asset of an incremental step."""

    cursor: CursorValue | None
    bytes: int
    rows: int


def incremental_cursor(step: Step) -> str | None:
    block = step.config.get("incremental")
    return block.get("cursor") if isinstance(block, dict) else None


def check_incremental(pipeline: Pipeline) -> None:
    """Refuse an incremental step feeding a writer that cannot append."""
    for step in pipeline.steps:
        for position, need in enumerate(step.needs):
            if incremental_cursor(pipeline.step(need)) and step.component not in APPENDING_WRITERS:
                raise PipelineSpecError(
                    str(pipeline.file),
                    f"{step.field_prefix}.needs[{position}]",
                    f"'{need}' is incremental; only {', '.join(sorted(APPENDING_WRITERS))} can append its rows",
                )


def committed_append(instance: dg.DagsterInstance, key: dg.AssetKey) -> CommittedAppend | None:
    """The state of the newest materialization of ``key`` made by a successful run."""
    cursor = None
    while True:
        page = instance.fetch_materializations(key, limit=_PAGE, cursor=cursor, ascending=False)
        for record in page.records:
            run = instance.get_run_by_id(record.run_id)
            if run is None or run.status != dg.DagsterRunStatus.SUCCESS:
                continue
            materialization = record.asset_materialization
            value = materialization.metadata.get(STATE_KEY) if materialization else None
            if value is None:
                return None  # written in full by a non-incremental version of the step: start over
            state = json.loads(str(value.value))
            return CommittedAppend(cursor=decode_cursor(state["cursor"]), bytes=state["bytes"], rows=state["rows"])
        if not page.has_more:
            return None
        cursor = page.cursor


def committed_read_cursor(instance: dg.DagsterInstance, writer_keys: Iterable[dg.AssetKey]) -> CursorValue | None:
    """Where the extraction starts: the smallest committed cursor of its writers (None: from the start)."""
    cursors: list[Any] = []
    for key in writer_keys:
        state = committed_append(instance, key)
        if state is None or state.cursor is None:
            return None
        cursors.append(state.cursor)
    return min(cursors) if cursors else None
