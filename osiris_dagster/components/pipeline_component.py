"""The Dagster Component that turns one OML pipeline file into assets, checks, a job, and
its optional schedule and source-change sensor (`schedules.py`, `sensors.py`).

Built the way dagster-sling and dagster-dlt turn YAML into assets: one `AssetSpec`-like asset per
step, keyed `<pipeline>/<step>` (hyphens become underscores, Dagster's identifier rule), one
group and one job per pipeline, `kinds` from the component and its connection family,
`code_version` from a hash of the step's spec so the UI flags changed steps. Each write step
carries a row-count check (rows written == rows extracted).

What a step *does* lives in the drivers; this module only wires steps into Dagster.
"""

import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg

from osiris_dagster.components.automation import automation_condition, build_automation_sensor
from osiris_dagster.components.incremental import (
    CURSOR_FROM_KEY,
    CURSOR_TO_KEY,
    check_incremental,
    committed_append,
    committed_read_cursor,
    incremental_cursor,
)
from osiris_dagster.components.ownership import owners_and_tags
from osiris_dagster.components.registry import ComponentType
from osiris_dagster.components.resources import (
    EXTRACTED_TABLE_IO_MANAGER_KEY,
    WRITTEN_TARGET_IO_MANAGER_KEY,
    OmlRunParams,
)
from osiris_dagster.components.schedules import build_schedule
from osiris_dagster.components.sensors import build_source_change_sensor
from osiris_dagster.components.source_tables import source_tables
from osiris_dagster.components.step_execution import execute_step, staging_dir
from osiris_dagster.connections import load_profiles
from osiris_dagster.io.table_metadata import column_schema
from osiris_dagster.project import ProjectLayout
from osiris_dagster.session.recording_executor import PIPELINE_TAG, STEP_ID_TAG, osiris_executor
from osiris_dagster.session.session_log import SessionLog, file_sha256
from osiris_dagster.spec.loader import check_step, connection_choice, load_pipeline
from osiris_dagster.spec.model import Pipeline, Step, to_python_name
from osiris_dagster.spec.params import effective_params
from osiris_dagster.step_run import StepRun, WrittenTarget

if TYPE_CHECKING:
    from osiris_dagster.staging import ExtractedTable

ROW_COUNT_CHECK = "row_count_matches_extract"


class OmlPipelineComponent(dg.Component, dg.Resolvable, dg.Model):
    """One OML 0.1.0 pipeline file as Dagster assets and a job.

    Every `assets/<name>.yaml` of the project is one instance (`definitions.py`); in a dg project
    a `defs.yaml` may declare more, with `pipeline_file` relative to that defs.yaml's folder and
    the project folder being the dg project's root.
    """

    pipeline_file: str
    project_dir: str | None = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        project = ProjectLayout.discover(self.project_dir or context.project_root)
        path = (context.path / self.pipeline_file).resolve()
        profiles = load_profiles(project.connections_file) if project.connections_file.exists() else None
        pipeline = load_pipeline(path, connections=profiles, project=project)
        params = effective_params(pipeline.params)
        check_incremental(pipeline)
        sources = source_tables(pipeline, params)
        assets = [_step_asset(pipeline, step, project, params, sources) for step in pipeline.steps]
        source_specs = list({spec.key: spec for spec in sources.values()}.values())
        # The source tables are external: Dagster observes them, never materializes them.
        external = dg.AssetSelection.assets(*(spec.key for spec in source_specs))
        steps = dg.AssetSelection.groups(pipeline.python_name) - external
        job = dg.define_asset_job(
            name=pipeline.python_name,
            selection=steps,
            executor_def=osiris_executor,
            tags={PIPELINE_TAG: pipeline.name},
            description=pipeline.description or f"Pipeline {pipeline.name} ({project.relative(path)})",
        )
        schedule = build_schedule(pipeline, job)
        sensors = [build_source_change_sensor(pipeline, project, job), build_automation_sensor(pipeline, assets)]
        return dg.Definitions(
            assets=[*source_specs, *assets],
            jobs=[job],
            schedules=[schedule] if schedule else None,
            sensors=[sensor for sensor in sensors if sensor is not None] or None,
        )


def asset_key(pipeline: Pipeline, step_id: str) -> dg.AssetKey:
    return dg.AssetKey([pipeline.python_name, to_python_name(step_id)])


def _step_asset(
    pipeline: Pipeline, step: Step, project: ProjectLayout, params: dict[str, Any], sources: dict[str, dg.AssetSpec]
) -> dg.AssetsDefinition:
    component, config = check_step(pipeline, step, params)
    family = None
    if component.connection_families:
        family, _ = connection_choice(
            component, config, file=str(pipeline.file), field=f"{step.field_prefix}.config.connection", connections=None
        )
    common: dict[str, Any] = {
        "key": asset_key(pipeline, step.id),
        "group_name": pipeline.python_name,
        "kinds": set(component.kinds(config, family)),
        "code_version": _code_version(step),
        "description": step.description or _describe(step, config),
        # The executor names a run's pipeline(s) from these, whatever job runs the step.
        "op_tags": {STEP_ID_TAG: step.id, PIPELINE_TAG: pipeline.name},
        "metadata": {"osiris/step_id": step.id, "osiris/component": step.component},
        **owners_and_tags(pipeline, step),
        "automation_condition": automation_condition(pipeline, step, ignore=[spec.key for spec in sources.values()]),
    }
    if component.mode == "read":
        source = sources.get(step.id)
        if source is not None:
            common["deps"] = [source.key]
            common["metadata"]["dagster/table_name"] = source.metadata["dagster/table_name"]
        return _read_asset(pipeline, step, project, common)
    return _write_asset(pipeline, step, project, common)


def _read_asset(pipeline: Pipeline, step: Step, project: ProjectLayout, common: dict[str, Any]) -> dg.AssetsDefinition:
    # Where this asset's staged files live; each run's file is named by its run id and the
    # materialization records the one it wrote (io/extracted_table_io_manager.py).
    common["metadata"]["osiris/staging_dir"] = project.relative(staging_dir(project, pipeline, step))
    writer_keys = [asset_key(pipeline, other.id) for other in pipeline.steps if step.id in other.needs]

    @dg.asset(io_manager_key=EXTRACTED_TABLE_IO_MANAGER_KEY, **common)
    # No return annotation: Dagster would evaluate it at definition time (and import pyarrow).
    def extracted_table(context: dg.AssetExecutionContext, osiris_params: OmlRunParams):  # type: ignore[no-untyped-def]
        def extract(run: StepRun, component: ComponentType) -> "ExtractedTable":
            if "incremental" in run.config:
                return _extract_increment(context, run, component, writer_keys)
            table: ExtractedTable = component.run(run)  # type: ignore[call-arg]
            run.session.metric("rows_read", table.rows, step_id=step.id)
            run.session.metric("bytes_written", table.bytes, step_id=step.id)
            return table

        return execute_step(
            context,
            pipeline=pipeline,
            step=step,
            project=project,
            params=osiris_params.values,
            body=extract,
            rows_of=lambda table: table.rows,
            csv_plans=lambda params: _csv_plans(context, pipeline, step, project, params),
        )

    return extracted_table


def _csv_plans(
    context: dg.AssetExecutionContext, pipeline: Pipeline, step: Step, project: ProjectLayout, params: dict[str, Any]
) -> tuple[Any, ...]:
    """The CSV files this run's write steps will write from ``step``'s table (prepared meanwhile).

    Only writers selected in this run, reading this step alone, and not appending (an incremental
    writer filters rows by its own cursor): see ``targets.csv_prepared``.
    """
    from osiris_dagster.components.builtin import csv_options
    from osiris_dagster.output_roots import resolve_write_path
    from osiris_dagster.targets.csv_prepared import CsvPlan

    if incremental_cursor(step):
        return ()
    # The run's selection (context.selected_asset_keys is this op's own keys only).
    selected = context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys
    plans = []
    for other in pipeline.steps:
        if other.component != "filesystem.csv_writer" or tuple(other.needs) != (step.id,):
            continue
        if asset_key(pipeline, other.id) not in selected:
            continue
        try:
            _component, config = check_step(pipeline, other, effective_params(pipeline.params, params))
            resolve_write_path(project, config["path"])  # never prepare a file the write may not write
            plans.append(CsvPlan(project.resolve(config["path"]), csv_options(config), context.run.run_id))
        except Exception:  # the write step itself reports a bad config
            continue
    return tuple(plans)


def _extract_increment(
    context: dg.AssetExecutionContext, run: StepRun, component: ComponentType, writer_keys: list[dg.AssetKey]
) -> "ExtractedTable":
    from osiris_dagster.sources.incremental import show_cursor, staged_cursor_max

    after = committed_read_cursor(context.instance, writer_keys)
    table: ExtractedTable = component.run(run, after=after)  # type: ignore[call-arg]
    newest = staged_cursor_max(table.path, run.config["incremental"]["cursor"])
    run.session.metric("rows_read", table.rows, step_id=run.step_id)
    run.session.metric("bytes_written", table.bytes, step_id=run.step_id)
    context.add_output_metadata(
        {
            CURSOR_FROM_KEY: show_cursor(after),
            CURSOR_TO_KEY: show_cursor(newest if newest is not None else after),
        }
    )
    return table


def _write_asset(pipeline: Pipeline, step: Step, project: ProjectLayout, common: dict[str, Any]) -> dg.AssetsDefinition:
    inputs = {f"input_{i}": need for i, need in enumerate(step.needs)}
    key = common["key"]
    appends = any(incremental_cursor(pipeline.step(need)) for need in step.needs)

    @dg.asset(
        io_manager_key=WRITTEN_TARGET_IO_MANAGER_KEY,
        ins={name: dg.AssetIn(key=asset_key(pipeline, need)) for name, need in inputs.items()},
        check_specs=[
            dg.AssetCheckSpec(
                ROW_COUNT_CHECK, asset=key, description="Rows written equal rows extracted by the step(s) it needs"
            )
        ],
        **common,
    )
    def written_asset(
        context: dg.AssetExecutionContext, osiris_params: OmlRunParams, **tables: Any
    ) -> Iterator[dg.Output[WrittenTarget] | dg.AssetCheckResult]:
        by_step = {inputs[name]: table for name, table in tables.items()}

        def write(run: StepRun, component: ComponentType) -> WrittenTarget:
            if appends:
                committed = committed_append(context.instance, key)
                target: WrittenTarget = component.run(run, by_step, committed=committed)  # type: ignore[call-arg]
            else:
                target = component.run(run, by_step)  # type: ignore[call-arg]
            run.session.metric("rows_written", target.rows_written, step_id=step.id)
            if target.bytes is not None:
                run.session.metric("bytes_written", target.bytes, step_id=step.id)
            if target.path is not None:
                run.session.event(
                    "artifact_created",
                    step_id=step.id,
                    artifact_type="output",
                    path=target.uri,
                    size_bytes=target.bytes or 0,
                    sha256=file_sha256(target.path),  # lets parity compare runs that wrote the same path
                )
            return target

        target = execute_step(
            context,
            pipeline=pipeline,
            step=step,
            project=project,
            params=osiris_params.values,
            body=write,
            rows_of=lambda written: written.rows_written,
        )
        expected = (
            target.rows_expected if target.rows_expected is not None else sum(table.rows for table in by_step.values())
        )
        passed = target.rows_written == expected
        SessionLog(project.session_dir(context.run.run_id)).event(
            "check_evaluated",
            step_id=step.id,
            check=ROW_COUNT_CHECK,
            passed=passed,
            expected=expected,
            actual=target.rows_written,
        )
        # The columns written are the extracted table's: the same schema, in the source's SQL terms.
        schema = (
            {}
            if len(by_step) != 1
            else {
                "dagster/column_schema": dg.MetadataValue.table_schema(
                    column_schema(next(iter(by_step.values())).schema)
                )
            }
        )
        yield dg.Output(target, metadata=schema)
        yield dg.AssetCheckResult(
            check_name=ROW_COUNT_CHECK,
            passed=passed,
            metadata={"rows_extracted": expected, "rows_written": target.rows_written},
        )

    return written_asset


def _code_version(step: Step) -> str:
    spec = {"component": step.component, "mode": step.mode, "needs": list(step.needs), "config": step.config}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _describe(step: Step, config: dict[str, Any]) -> str:
    if step.mode == "read":
        source = config.get("table") or config.get("query")
        return (
            f"Extracted table: `{source}` from {config.get('connection', 'the default connection')} ({step.component})"
        )
    where = config.get("path") or config.get("table") or ""
    return f"Written by {step.component}: {where} (from {', '.join(step.needs)})"
