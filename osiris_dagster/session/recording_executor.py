"""The code location's executor: Dagster's own (in-process by default, multiprocess on request),
wrapped so that every run writes its session directory's run-level records.

Wrapping the executor, rather than hooking steps, is what makes the session directory appear
for *every* run however it was started — `dagster job execute`, the UI, the daemon, the CLI,
or `dagster api execute_run` inside a sandbox — and lets the run's end be recorded even when a
step failed and the rest were skipped. Step-level records are written by the steps themselves
(`components.step_execution`).

It is the code location's default executor (`definitions.py`), not only the pipeline jobs':
the UI's Materialize / Materialize all, a selection across pipelines, asset backfills and
`dagster asset materialize` run Dagster's implicit `__ASSET_JOB`, which takes the location's
default. Without it those runs got Dagster's multiprocess executor (31 s against ~5 s for the
demo) and no run-level records. A run's pipeline is read from its steps' `osiris/pipeline` op
tag, so a run that was not started through a pipeline job still names its pipeline; a selection
across pipelines names them all (`pipeline` "a+b", `pipelines` ["a", "b"] in status.json) and
counts every selected step in `steps_total`.

It is also where a run's life on this host begins and ends (``osiris_dagster.runs``): before the
first step it records the run's owner (pid, host; also as run tags ``osiris/pid``, ``osiris/host``),
reclaims runs whose process died (marked FAILURE, ``status.json`` written, debris removed) and
applies the staging retention rule; after the last it releases the owner record.

Default mode is in-process: Dagster's multiprocess executor spawns a Python process per step
(~12 s for 11 trivial steps on a 2-core machine, against ~2 s in-process). Switch with run
config `execution: {config: {multiprocess: {max_concurrent: 4}}}`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    multi_or_in_process_executor,
    multiple_process_executor_requirements,
)
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.execution.retries import RetryMode

from osiris_dagster.project import ProjectLayout
from osiris_dagster.runs.abandoned import reclaim_abandoned_runs
from osiris_dagster.runs.owner import RunOwner, record_owner, release_owner
from osiris_dagster.runs.retention import prune_staging
from osiris_dagster.secrets import mask_text
from osiris_dagster.session.session_log import SessionLog

logger = logging.getLogger("osiris_dagster.run")

PIPELINE_TAG = "osiris/pipeline"
PID_TAG = "osiris/pid"
HOST_TAG = "osiris/host"
STEP_ID_TAG = "osiris/step_id"
SANDBOX_ID_ENV = "OSIRIS_SANDBOX_ID"


class SessionRecordingExecutor(dg.Executor):
    def __init__(self, inner: dg.Executor, mode: str) -> None:
        self._inner = inner
        self._mode = mode

    @property
    def retries(self) -> RetryMode:
        return self._inner.retries

    @property
    def step_dependency_config(self):  # type: ignore[no-untyped-def]
        return self._inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[DagsterEvent]:
        run = plan_context.dagster_run
        project = ProjectLayout.discover()
        session = SessionLog(project.session_dir(run.run_id))
        step_keys = list(execution_plan.step_keys_to_execute)
        step_ids = {key: _step_tag(execution_plan, key, STEP_ID_TAG) or key for key in step_keys}
        pipelines = _pipelines(execution_plan, step_keys) or [run.tags.get(PIPELINE_TAG, run.job_name)]
        pipeline = "+".join(pipelines)
        started_at, started = datetime.now(UTC), time.perf_counter()
        owner = _begin_run(project, plan_context.instance, run.run_id)
        session.event(
            "run_start",
            pipeline=pipeline,
            job=run.job_name,
            steps_total=len(step_keys),
            executor=self._mode,
            pid=owner.pid,
            host=owner.host,
        )
        session.metric("steps_total", len(step_keys))
        completed: list[str] = []
        failed: list[str] = []
        first_error: str | None = None
        reason: str | None = None
        try:
            for event in self._inner.execute(plan_context, execution_plan):
                if event.event_type == DagsterEventType.STEP_SUCCESS:
                    completed.append(step_ids.get(event.step_key, event.step_key))
                elif event.event_type == DagsterEventType.STEP_FAILURE:
                    failed.append(step_ids.get(event.step_key, event.step_key))
                    if first_error is None and event.step_failure_data is not None:
                        first_error = mask_text(_failure_message(event))
                yield event
        except BaseException as error:  # interrupted (terminate) or the executor itself broke
            reason = "interrupted" if isinstance(error, KeyboardInterrupt | GeneratorExit) else mask_text(str(error))
            raise
        finally:
            duration_ms = int((time.perf_counter() - started) * 1000)
            ok = reason is None and not failed and len(completed) == len(step_keys)
            error = None if ok else (first_error or reason or "steps did not complete")
            if not ok:
                session.event("run_error", error=error, error_type="StepFailure" if failed else "RunInterrupted")
            session.metric("steps_completed", len(completed))
            session.metric("run_duration_ms", duration_ms)
            session.event(
                "run_end",
                ok=ok,
                duration_ms=duration_ms,
                steps_completed=len(completed),
                steps_total=len(step_keys),
                error=error,
            )
            session.write_status(
                {
                    "session": session.session,
                    "run_id": run.run_id,
                    "pipeline": pipeline,
                    "pipelines": pipelines,
                    "job": run.job_name,
                    "ok": ok,
                    "exit_code": 0 if ok else 1,
                    "reason": error,
                    "steps_total": len(step_keys),
                    "steps_completed": len(completed),
                    "steps_failed": failed,
                    "sandbox_id": _sandbox_id(),
                    "started_at": started_at.isoformat().replace("+00:00", "Z"),
                    "finished_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "duration_ms": duration_ms,
                }
            )
            _end_run(project, plan_context.instance, run.run_id)


def _begin_run(project: ProjectLayout, instance: Any, run_id: str) -> RunOwner:
    """Record this process as the run's owner, then reclaim dead runs and prune old staged files.

    Housekeeping never fails the run: a problem there is logged and the run goes on.
    """
    owner = record_owner(project, run_id, _instance_home(instance))
    try:
        instance.add_run_tags(run_id, {PID_TAG: str(owner.pid), HOST_TAG: owner.host})
        reclaim_abandoned_runs(project, instance, skip_run_id=run_id)
        prune_staging(project, instance, current_run_id=run_id)
    except Exception as error:
        logger.warning("osiris: run-start housekeeping failed: %s", mask_text(str(error)))
    return owner


def _end_run(project: ProjectLayout, instance: Any, run_id: str) -> None:
    """Prune what this run superseded (its materializations are stored by now), release the owner."""
    try:
        prune_staging(project, instance, current_run_id=run_id)
    except Exception as error:
        logger.warning("osiris: run-end housekeeping failed: %s", mask_text(str(error)))
    release_owner(project, run_id)


def _instance_home(instance: Any) -> str | None:
    try:
        return str(instance.root_directory)
    except Exception:
        return None


def _failure_message(event: DagsterEvent) -> str:
    """The failure as the user should read it: our `Failure`'s description, else the error text."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.message.strip() if data.error else "step failed"


def _step_tag(execution_plan: Any, step_key: str, tag: str) -> str | None:
    step = execution_plan.get_step_by_key(step_key)
    return (step.tags or {}).get(tag)


def _pipelines(execution_plan: Any, step_keys: list[str]) -> list[str]:
    """The pipelines whose steps this run executes, sorted (one for a pipeline job's run)."""
    return sorted({name for key in step_keys if (name := _step_tag(execution_plan, key, PIPELINE_TAG))})


def _sandbox_id() -> str:
    import os

    return os.environ.get(SANDBOX_ID_ENV, "local")


def _requirements(config: dict[str, Any]) -> list[Any]:
    return multiple_process_executor_requirements() if "multiprocess" in config else []


@dg.executor(
    name="osiris",
    config_schema=dg.Field(
        dg.Selector({"in_process": IN_PROC_CONFIG, "multiprocess": MULTI_PROC_CONFIG}),
        default_value={"in_process": {}},
        description="in_process (default, fastest for I/O-bound steps) or multiprocess",
    ),
    requirements=_requirements,
)
def osiris_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    mode = "multiprocess" if "multiprocess" in init_context.executor_config else "in_process"
    return SessionRecordingExecutor(multi_or_in_process_executor.executor_creation_fn(init_context), mode)
