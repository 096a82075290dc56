"""Which pipelines' steps a run executes, whatever job it belongs to.

A run is not always a pipeline's named job: the UI's "Materialize all" (Catalog or asset group),
an asset's "Materialize", a sensor's asset selection all run Dagster's implicit ``__ASSET_JOB``,
whose steps may come from several pipelines; a re-execution from failure runs a subset of a
job's steps. What the launcher checks and forwards (connection variables, ``OSIRIS_PARAM_*``,
loopback hosts, incremental steps, files outside the project) must follow the steps that will
execute, not the job's name — found by name, an asset-job run forwarded nothing and the sandbox
silently read the embedded demo database instead of the selected one.

The steps come from the run's execution plan: every step carries its pipeline and OML step id
as op tags (``components/pipeline_component.py``), the same tags the recording executor names a
run's pipelines from. Only the steps the plan executes count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from osiris_dagster.connections import load_profiles
from osiris_dagster.errors import InputError
from osiris_dagster.project import ProjectLayout
from osiris_dagster.spec.loader import load_pipeline
from osiris_dagster.spec.model import Pipeline, Step


@dataclass(frozen=True)
class SelectedPipeline:
    """One pipeline of a run and the steps of it the run executes, in the pipeline's order."""

    pipeline: Pipeline
    steps: tuple[Step, ...]


def plan_step_ids(plan_snapshot: Any, job_name: str) -> dict[str, list[str]]:
    """pipeline name -> OML step ids the run executes, read from its execution plan snapshot.

    A plan without our tags (a job that is not the product's) falls back to the job's name as the
    pipeline's name with every step (``["*"]``), as the launcher found pipelines before.
    """
    # Here, not at module level: it imports Dagster, which the supervisor defers (plans are read
    # where Dagster is loaded anyway, in the launcher).
    from osiris_dagster.session.recording_executor import PIPELINE_TAG, STEP_ID_TAG

    wanted = set(plan_snapshot.step_keys_to_execute or [step.key for step in plan_snapshot.steps])
    found: dict[str, list[str]] = {}
    for step in plan_snapshot.steps:
        tags = step.tags or {}
        if step.key in wanted and PIPELINE_TAG in tags and STEP_ID_TAG in tags:
            found.setdefault(tags[PIPELINE_TAG], []).append(tags[STEP_ID_TAG])
    return found or {job_name: ["*"]}


def load_selection(project: ProjectLayout, step_ids: Mapping[str, Sequence[str]]) -> list[SelectedPipeline]:
    """The pipelines named in ``step_ids`` (by OML name or job name), each loaded once.

    ``["*"]`` selects every step. A pipeline file that does not load is skipped: it is no business
    of this run unless the run executes it, and then the run fails in the sandbox with the same
    message as locally.
    """
    profiles = load_profiles(project.connections_file) if project.connections_file.exists() else None
    selected: list[SelectedPipeline] = []
    for path in project.pipeline_files():
        try:
            pipeline = load_pipeline(path, connections=profiles)
        except InputError:
            continue
        ids = step_ids.get(pipeline.name, step_ids.get(pipeline.python_name))
        if ids is None:
            continue
        steps = pipeline.steps if "*" in ids else tuple(step for step in pipeline.steps if step.id in set(ids))
        selected.append(SelectedPipeline(pipeline, steps))
    return selected
