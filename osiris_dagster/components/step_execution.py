"""Running one OML step inside its Dagster asset: session-log lifecycle, config, connection, masking.

Every asset body goes through `execute_step`, so every step of every pipeline leaves the same
trail in the session directory, in the same order: step_start, cfg_materialized +
artifact_created (the cleaned config), connection_resolve_start/complete, the driver's own
events, then step_complete or step_failed. A failure is re-raised as a `dagster.Failure` whose
message is masked and which carries no unmasked exception along (`from None`), because Dagster
stores the failure — message, cause and context — in its event log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg

from osiris_dagster.components.registry import ComponentType
from osiris_dagster.connections import Connection, load_profiles
from osiris_dagster.errors import InputError
from osiris_dagster.project import ProjectLayout
from osiris_dagster.secrets import mask_secrets, mask_text
from osiris_dagster.session.session_log import SessionLog
from osiris_dagster.spec.loader import check_step, connection_choice
from osiris_dagster.spec.model import Pipeline, Step
from osiris_dagster.spec.params import effective_params
from osiris_dagster.step_run import StepRun

T = TypeVar("T")

logger = logging.getLogger("osiris_dagster.step")


def staging_path(project: ProjectLayout, pipeline: Pipeline, step: Step, run_id: str) -> Path:
    """Where a read step stages its table in one run: its own file, never shared with another run."""
    from osiris_dagster.staging import staged_path

    return staged_path(project.staging_dir, pipeline.python_name, step.id, run_id)


def staging_dir(project: ProjectLayout, pipeline: Pipeline, step: Step) -> Path:
    """The folder holding every run's staged file of one extracted-table asset."""
    return project.staging_dir / pipeline.python_name / step.id


def execute_step(
    context: dg.AssetExecutionContext,
    *,
    pipeline: Pipeline,
    step: Step,
    project: ProjectLayout,
    params: dict[str, Any],
    body: Callable[[StepRun, ComponentType], T],
    rows_of: Callable[[T], int],
    csv_plans: Callable[[dict[str, Any]], tuple[Any, ...]] | None = None,
) -> T:
    session = SessionLog(project.session_dir(context.run.run_id))
    driver = step.component
    session.event("step_start", step_id=step.id, driver=driver)
    started = time.perf_counter()
    try:
        component, config = check_step(pipeline, step, effective_params(pipeline.params, params), project=project)
        connection = _resolve_connection(session, pipeline, step, component, config, project)
        _materialize_config(session, project, step, component, config, connection)
        step_run = StepRun(
            pipeline=pipeline,
            step=step,
            config=config,
            connection=connection,
            project=project,
            session=session,
            staging_path=staging_path(project, pipeline, step, context.run.run_id),
            log=context.log,  # type: ignore[arg-type]  # DagsterLogManager: the run log, UI and console
            run_id=context.run.run_id,
            csv_plans=csv_plans(params) if csv_plans is not None else (),
        )
        result = body(step_run, component)
    except Exception as error:  # every failure, user's or driver's, is reported the same way
        message = mask_text(str(error)) or type(error).__name__
        error_type = type(error).__name__
    else:
        duration_ms = _elapsed_ms(started)
        rows = rows_of(result)
        session.metric("rows_processed", rows, step_id=step.id)
        session.metric("step_duration_ms", duration_ms, step_id=step.id)
        rate = round(rows / (duration_ms / 1000), 1) if duration_ms > 0 else 0.0
        session.metric("rows_per_second", rate, step_id=step.id)
        # Named: a written asset's row-count check is an output of the same op.
        output = context.assets_def.get_output_name_for_asset_key(context.asset_key)
        context.add_output_metadata({"rows_per_second": dg.MetadataValue.float(rate)}, output_name=output)
        session.event("step_complete", step_id=step.id, driver=driver, rows_processed=rows, duration_ms=duration_ms)
        return result
    duration_ms = _elapsed_ms(started)
    session.metric("step_duration_ms", duration_ms, step_id=step.id)
    session.event(
        "step_failed", step_id=step.id, driver=driver, error=message, error_type=error_type, duration_ms=duration_ms
    )
    # Raised outside the except block and `from None`: the unmasked original must not travel.
    raise dg.Failure(description=f"{step.id}: {message}", metadata={"error_type": error_type}) from None


def _resolve_connection(
    session: SessionLog,
    pipeline: Pipeline,
    step: Step,
    component: ComponentType,
    config: dict[str, Any],
    project: ProjectLayout,
) -> Connection | None:
    if not component.connection_families:
        return None
    profiles = load_profiles(project.connections_file)
    family, alias = connection_choice(
        component, config, file=str(pipeline.file), field=f"{step.field_prefix}.config.connection", connections=profiles
    )
    assert alias is not None  # choose_alias ran: profiles were given
    session.event("connection_resolve_start", step_id=step.id, family=family, alias=alias)
    try:
        connection = profiles.resolve(family, alias)
    except InputError:
        session.event("connection_resolve_complete", step_id=step.id, family=family, alias=alias, ok=False)
        raise
    session.event("connection_resolve_complete", step_id=step.id, family=family, alias=alias, ok=True)
    return connection


def _materialize_config(
    session: SessionLog,
    project: ProjectLayout,
    step: Step,
    component: ComponentType,
    config: dict[str, Any],
    connection: Connection | None,
) -> None:
    cleaned: dict[str, Any] = {"step_id": step.id, "component": component.name, "mode": step.mode, "config": config}
    if connection is not None:
        cleaned["connection"] = {
            "reference": connection.reference,
            "fields": mask_secrets(dict(connection.fields)),
        }
    path, size, sha256 = session.write_cleaned_config(step.id, cleaned)
    relative = project.relative(path)
    session.event("cfg_materialized", step_id=step.id, path=relative, size_bytes=size, sha256=sha256)
    session.event("artifact_created", step_id=step.id, artifact_type="cleaned_config", path=relative, size_bytes=size)


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
