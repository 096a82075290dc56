"""`owners:` and `tags:` of a pipeline and its steps, as Dagster asset owners and tags.

A step's owners are added to its pipeline's (a team owns the pipeline, a person may own one
table of it); a step's tags override its pipeline's tag of the same key. Both are checked by the
pipeline JSON Schema with Dagster's own rules (owner: an email or `team:<name>`; tag keys and
values: Dagster's strict tag characters), so a pipeline that validates is one Dagster accepts.
"""

from __future__ import annotations

from typing import Any

from osiris_dagster.spec.model import Pipeline, Step


def owners_and_tags(pipeline: Pipeline, step: Step | None) -> dict[str, Any]:
    """`owners` and `tags` keyword arguments for the step's asset (the pipeline's with step None)."""
    owners = list(pipeline.document.get("owners") or [])
    tags = dict(pipeline.document.get("tags") or {})
    if step is not None:
        raw = pipeline.document["steps"][step.index]
        owners += [owner for owner in raw.get("owners") or [] if owner not in owners]
        tags.update(raw.get("tags") or {})
    return {"owners": owners, "tags": tags}
