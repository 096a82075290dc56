"""Sensors: a pipeline's source-change sensor, and the run-failure alert for every run of the code location.

**Source change** (opt-in per pipeline, `sensor: {source_change: {minimum_interval_seconds: 30}}`):
each evaluation fingerprints the source of every read step (`sources.fingerprint`) and
keeps the fingerprints in the sensor's cursor, a JSON object `{step_id: fingerprint}`. The first
evaluation only records that baseline. Afterwards, a step whose fingerprint differs from the
cursor's gets one run request for exactly its extracted-table asset and the written assets that
need it; unchanged tables are not re-extracted. A source that cannot be fingerprinted (server
down, table dropped) is logged (masked) and keeps its previous fingerprint, so the sensor neither
fails nor fires on it. Parameters and connection variables are read from the environment of the
process evaluating the sensor (the daemon's code server), as a run would read them.

**Run alert**: one run-failure sensor for the code location. For any failed run of the location
— a pipeline job, or the implicit `__ASSET_JOB` of the UI's Materialize, a selection across
pipelines, a backfill — it appends a `run_alert` event {step_id, job, error} to the run's session
directory and logs an error naming the failed step and the (masked) error. The failed step comes
from the session's own `step_failed` event, else from Dagster's step-failure events. Dagster's
run-status sensor machinery already limits it to runs of this code location, so it does not
filter further (it used to key on the pipeline job's tag and missed every UI Materialize).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import dagster as dg

from osiris_dagster.connections import load_profiles
from osiris_dagster.project import ProjectLayout
from osiris_dagster.secrets import mask_text
from osiris_dagster.session.reader import SessionRecord
from osiris_dagster.session.recording_executor import PIPELINE_TAG
from osiris_dagster.session.session_log import SessionLog
from osiris_dagster.spec.loader import check_step, connection_choice
from osiris_dagster.spec.model import Pipeline, Step, to_python_name
from osiris_dagster.spec.params import effective_params

DEFAULT_MINIMUM_INTERVAL_SECONDS = 30
CHANGED_STEPS_TAG = "osiris/changed_steps"
RUN_ALERT_SENSOR = "osiris_run_alert"


def source_change_sensor_name(pipeline: Pipeline) -> str:
    return f"{pipeline.python_name}_source_change"


def build_source_change_sensor(
    pipeline: Pipeline, project: ProjectLayout, job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition | None:
    block = (pipeline.document.get("sensor") or {}).get("source_change")
    if block is None:
        return None
    read_steps = [step for step in pipeline.steps if step.mode == "read"]

    def evaluate(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        previous: dict[str, str] | None = json.loads(context.cursor) if context.cursor else None
        current = dict(previous or {})
        changed: list[Step] = []
        params = effective_params(pipeline.params)
        for step in read_steps:
            try:
                fingerprint = _fingerprint(pipeline, step, project, params)
            except Exception as error:  # one unreachable source must not stop the others
                context.log.warning(mask_text(f"{step.id}: cannot fingerprint its source: {error}"))
                continue
            if previous is not None and step.id in previous and previous[step.id] != fingerprint:
                changed.append(step)
            current[step.id] = fingerprint
        cursor = json.dumps(current, sort_keys=True)
        if previous is None:
            return dg.SensorResult(skip_reason=f"baseline recorded for {len(current)} source(s)", cursor=cursor)
        if not changed:
            return dg.SensorResult(skip_reason="no source changed", cursor=cursor)
        request = dg.RunRequest(
            asset_selection=[key for step in changed for key in _step_and_writers(pipeline, step)],
            tags={PIPELINE_TAG: pipeline.name, CHANGED_STEPS_TAG: ",".join(step.id for step in changed)},
        )
        context.log.info(f"source changed for: {', '.join(step.id for step in changed)}")
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    enabled = block.get("enabled", True)
    return dg.SensorDefinition(
        name=source_change_sensor_name(pipeline),
        evaluation_fn=evaluate,
        job=job,
        minimum_interval_seconds=int(block.get("minimum_interval_seconds", DEFAULT_MINIMUM_INTERVAL_SECONDS)),
        default_status=dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED,
        description=f"Runs the steps of {pipeline.name} whose source table changed (see docs/automation.md)",
    )


def _fingerprint(pipeline: Pipeline, step: Step, project: ProjectLayout, params: dict[str, Any]) -> str:
    from osiris_dagster.demo.movies import ensure_demo_database
    from osiris_dagster.sources.fingerprint import source_fingerprint

    component, config = check_step(pipeline, step, params)
    profiles = load_profiles(project.connections_file)
    family, alias = connection_choice(
        component, config, file=str(pipeline.file), field=f"{step.field_prefix}.config.connection", connections=profiles
    )
    assert alias is not None  # profiles were given
    connection = profiles.resolve(family, alias)
    if connection.demo_database:
        ensure_demo_database(project, connection.demo_database)
    cursor = (config.get("incremental") or {}).get("cursor")
    return source_fingerprint(
        connection.sqlalchemy_url(project), table=config.get("table"), query=config.get("query"), column=cursor
    )


def _step_and_writers(pipeline: Pipeline, step: Step) -> Iterable[dg.AssetKey]:
    yield dg.AssetKey([pipeline.python_name, to_python_name(step.id)])
    for other in pipeline.steps:
        if step.id in other.needs:
            yield dg.AssetKey([pipeline.python_name, to_python_name(other.id)])


@dg.run_failure_sensor(
    name=RUN_ALERT_SENSOR,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records a run_alert event in a failed run's session and logs the failed step",
)
def run_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    project = ProjectLayout.discover()
    session_dir = project.session_dir(run.run_id)
    step_id, error = _first_failure(context, session_dir)
    error = mask_text(error)
    SessionLog(session_dir).event("run_alert", step_id=step_id, job=run.job_name, error=error)
    context.log.error(mask_text(f"run {run.run_id} of {run.job_name} failed at step {step_id or '(none)'}: {error}"))


def _first_failure(context: dg.RunFailureSensorContext, session_dir: Any) -> tuple[str | None, str]:
    if session_dir.is_dir():
        for line in SessionRecord.read(session_dir).events:
            if line.get("event") == "step_failed":
                return str(line["step_id"]), str(line.get("error", ""))
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        message = data.error.message if data and data.error else event.message or ""
        return event.step_key, message.strip()
    return None, (context.failure_event.message or "run failed").strip()
