"""Loading an OML pipeline file and refusing anything wrong with it, before anything runs.

Checks, in the order a user would fix them: YAML syntax; OML's forbidden keys; the JSON
Schema (`schemas/pipeline.schema.json`); unique step ids, `needs` naming existing steps, no
cycles; known component, mode fitting the component; parameters (and that every value given
for a run is declared); inline secrets; each component's own config schema and checks (a write
path inside the project, a known encoding); the connection family fitting the component (and,
when connection profiles are given, the alias existing); one writer per target. Every failure
is a `PipelineSpecError` naming the file and the field, e.g. ``assets/movies.yaml: steps[3].needs: unknown step
'extract-actor' (did you mean 'extract-actors'?)``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from osiris_dagster.components.registry import ComponentType, ConfigProblem, component_types
from osiris_dagster.connections import ConnectionProfiles, parse_reference
from osiris_dagster.errors import ConnectionProfileError, PipelineSpecError
from osiris_dagster.project import ProjectLayout
from osiris_dagster.schemas_dir import SCHEMAS_DIR
from osiris_dagster.secrets import is_secret_key
from osiris_dagster.spec.model import Pipeline, Step
from osiris_dagster.spec.params import UnknownParamError, effective_params, render
from osiris_dagster.strict_yaml import DuplicateKeyError, load_yaml

# OML 0.1.0 forbids these top-level keys; each has a replacement worth naming.
FORBIDDEN_TOP_LEVEL = {
    "version": "use 'oml_version: \"0.1.0\"'",
    "connectors": "connections live in resources/connections.yaml and are referenced as @family.alias",
    "tasks": "use 'steps'",
    "outputs": "outputs are write steps",
}


def load_pipeline(
    path: Path,
    *,
    params: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    connections: ConnectionProfiles | None = None,
    project: ProjectLayout | None = None,
) -> Pipeline:
    """Read and validate one pipeline file; raises `PipelineSpecError` naming file and field.

    With ``project``, write paths are checked against the project folder (and its declared
    output roots); ``params`` are the values given for one run and must be declared.
    """
    file = str(path)
    document = _read_yaml(path)
    _check_top_level(document, file)
    _check_schema(document, file)
    steps = tuple(
        Step(
            id=raw["id"],
            component=raw["component"],
            mode=raw["mode"],
            needs=tuple(raw.get("needs") or ()),
            config=dict(raw.get("config") or {}),
            index=index,
            description=raw.get("description"),
        )
        for index, raw in enumerate(document["steps"])
    )
    pipeline = Pipeline(
        name=document["name"],
        file=path,
        steps=steps,
        params=dict(document.get("params") or {}),
        description=document.get("description"),
        document=document,
    )
    _check_graph(pipeline)
    if "schedule" in document:
        # Dagster's own cron rule, so `validate` refuses exactly what Dagster would (imported only
        # when a schedule is declared: it pulls in Dagster).
        from osiris_dagster.components.schedules import pipeline_schedule

        pipeline_schedule(pipeline)
    check_param_overrides(pipeline, params)
    if "automation" in document or any("automation" in raw for raw in document["steps"]):
        from osiris_dagster.components.automation import check_automation

        check_automation(pipeline)
    values = effective_params(pipeline.params, params, environ)
    targets: dict[str, Step] = {}
    for step in steps:
        component, config = check_step(pipeline, step, values, connections, project)
        if component.target_of is not None:
            _check_one_writer(pipeline, step, component, config, connections, project, targets)
    return pipeline


def check_param_overrides(pipeline: Pipeline, overrides: Mapping[str, Any] | None, source: str = "--param") -> None:
    """A value given for a parameter the pipeline does not declare is a typo until proven otherwise."""
    for name in overrides or {}:
        if name in pipeline.params:
            continue
        hint = difflib.get_close_matches(name, list(pipeline.params), n=1)
        declared = ", ".join(sorted(pipeline.params)) or "none"
        suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise PipelineSpecError(
            str(pipeline.file), "params", f"{source} '{name}' is not declared{suffix}; declared: {declared}"
        )


def _check_one_writer(
    pipeline: Pipeline,
    step: Step,
    component: ComponentType,
    config: Mapping[str, Any],
    connections: ConnectionProfiles | None,
    project: ProjectLayout | None,
    targets: dict[str, Step],
) -> None:
    """Two steps writing one file (or one table over one connection) would overwrite each other."""
    reference = None
    if component.connection_families:
        field = f"{step.field_prefix}.config.connection"
        family, alias = connection_choice(
            component, config, file=str(pipeline.file), field=field, connections=connections
        )
        reference = f"@{family}.{alias}" if alias else str(config.get("connection") or f"@{family}")
    try:
        target = component.target_of(config, reference, project)  # type: ignore[misc]
    except ConfigProblem as problem:
        raise PipelineSpecError(
            str(pipeline.file), f"{step.field_prefix}.config.{problem.field}", problem.message
        ) from None
    if target is None:
        return
    other = targets.get(target.identity)
    if other is not None:
        raise PipelineSpecError(
            str(pipeline.file),
            f"{step.field_prefix}.config.{target.field}",
            f"{target.shown} is also written by {other.field_prefix} '{other.id}': one target, one writer",
        )
    targets[target.identity] = step


def check_step(
    pipeline: Pipeline,
    step: Step,
    params: Mapping[str, Any],
    connections: ConnectionProfiles | None = None,
    project: ProjectLayout | None = None,
) -> tuple[ComponentType, dict[str, Any]]:
    """Validate one step with the given parameters; return its component and rendered config.

    Also used at run time, when run config may bring other parameter values (a CSV path built
    from a parameter is checked again there, with the run's values).
    """
    file, prefix = str(pipeline.file), step.field_prefix
    component = _component_for(step, file)
    try:
        config = render(step.config, params)
    except UnknownParamError as error:
        raise PipelineSpecError(file, f"{prefix}.config", str(error)) from None
    _reject_inline_secrets(config, file, f"{prefix}.config")
    errors = sorted(_validator(component.name).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise PipelineSpecError(file, f"{prefix}.config{where}", _schema_message(error))
    if component.check_config is not None:
        try:
            component.check_config(config, project)
        except ConfigProblem as problem:
            raise PipelineSpecError(file, f"{prefix}.config.{problem.field}", problem.message) from None
    _check_connection(component, config, file, prefix, connections)
    return component, config


def connection_choice(
    component: ComponentType,
    config: Mapping[str, Any],
    *,
    file: str,
    field: str,
    connections: ConnectionProfiles | None,
) -> tuple[str, str | None]:
    """(family, alias) a step's connection refers to; alias None = "the family's default"."""
    reference = config.get("connection")
    if reference is None:
        if len(component.connection_families) != 1:
            families = ", ".join(sorted(component.connection_families))
            raise PipelineSpecError(file, field, f"a connection is required (@family.alias, family one of: {families})")
        family, alias = next(iter(component.connection_families)), None
    else:
        try:
            family, alias = parse_reference(str(reference), file=file, field=field)
        except ConnectionProfileError as error:
            raise PipelineSpecError(error.file, error.field, error.message) from None
    if family not in component.connection_families:
        allowed = ", ".join(sorted(component.connection_families))
        raise PipelineSpecError(
            file, field, f"connection family '{family}' does not fit {component.name} (expected: {allowed})"
        )
    if connections is not None:
        alias = connections.choose_alias(family, alias, file=file, field=field)
    return family, alias


def _check_connection(
    component: ComponentType,
    config: Mapping[str, Any],
    file: str,
    prefix: str,
    connections: ConnectionProfiles | None,
) -> None:
    field = f"{prefix}.config.connection"
    if not component.connection_families:
        if "connection" in config:
            raise PipelineSpecError(file, field, f"{component.name} takes no connection")
        return
    connection_choice(component, config, file=file, field=field, connections=connections)


def _read_yaml(path: Path) -> dict[str, Any]:
    file = str(path)
    if not path.is_file():
        raise PipelineSpecError(file, "", "pipeline file not found")
    try:
        document = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PipelineSpecError(file, "", "not UTF-8 text") from None
    except DuplicateKeyError as error:
        raise PipelineSpecError(file, error.field, f"invalid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        problem = getattr(error, "problem", None) or str(error)
        raise PipelineSpecError(file, where, f"invalid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise PipelineSpecError(file, "(top level)", "a pipeline is a mapping with oml_version, name and steps")
    return document


def _check_top_level(document: dict[str, Any], file: str) -> None:
    for key, advice in FORBIDDEN_TOP_LEVEL.items():
        if key in document:
            raise PipelineSpecError(file, key, f"forbidden in OML 0.1.0: {advice}")


def _check_schema(document: dict[str, Any], file: str) -> None:
    errors = sorted(_pipeline_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        parts = list(error.absolute_path)
        where = ""
        for part in parts:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        raise PipelineSpecError(file, where or "(top level)", _schema_message(error))


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown key(s)")
    return error.message


def _check_graph(pipeline: Pipeline) -> None:
    file = str(pipeline.file)
    seen: dict[str, Step] = {}
    for step in pipeline.steps:
        if step.id in seen:
            raise PipelineSpecError(
                file, f"{step.field_prefix}.id", f"duplicate step id '{step.id}' (also steps[{seen[step.id].index}])"
            )
        seen[step.id] = step
    for step in pipeline.steps:
        for position, need in enumerate(step.needs):
            if need not in seen:
                hint = difflib.get_close_matches(need, list(seen), n=1)
                suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise PipelineSpecError(
                    file, f"{step.field_prefix}.needs[{position}]", f"unknown step '{need}'{suffix}"
                )
            if need == step.id:
                raise PipelineSpecError(file, f"{step.field_prefix}.needs[{position}]", "a step cannot need itself")
    cycle = _find_cycle(pipeline)
    if cycle:
        first = pipeline.step(cycle[0])
        raise PipelineSpecError(file, f"{first.field_prefix}.needs", "cycle: " + " -> ".join([*cycle, cycle[0]]))


def _find_cycle(pipeline: Pipeline) -> list[str] | None:
    needs = {step.id: step.needs for step in pipeline.steps}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for need in needs[node]:
            if state.get(need) == 1:
                return stack[stack.index(need) :]
            if need not in state:
                found = visit(need)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for step in pipeline.steps:
        if step.id not in state:
            found = visit(step.id)
            if found:
                return found
    return None


def _component_for(step: Step, file: str) -> ComponentType:
    known = component_types()
    component = known.get(step.component)
    if component is None:
        hint = difflib.get_close_matches(step.component, list(known), n=1)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(sorted(known))})"
        raise PipelineSpecError(file, f"{step.field_prefix}.component", f"unknown component '{step.component}'{suffix}")
    if step.mode != component.mode:
        raise PipelineSpecError(
            file, f"{step.field_prefix}.mode", f"{component.name} is a '{component.mode}' component, not '{step.mode}'"
        )
    if component.mode == "read" and step.needs:
        raise PipelineSpecError(file, f"{step.field_prefix}.needs", "a read step takes no inputs")
    if component.mode == "write" and not step.needs:
        raise PipelineSpecError(file, f"{step.field_prefix}.needs", "a write step needs the step whose rows it writes")
    if component.mode == "write" and component.max_inputs is not None and len(step.needs) > component.max_inputs:
        raise PipelineSpecError(
            file,
            f"{step.field_prefix}.needs",
            f"{component.name} writes one table: it takes {component.max_inputs} step(s)",
        )
    return component


def _reject_inline_secrets(config: Any, file: str, field: str) -> None:
    if isinstance(config, dict):
        for key, value in config.items():
            if is_secret_key(str(key)):
                raise PipelineSpecError(
                    file,
                    f"{field}.{key}",
                    "inline secrets are not allowed: put the value in resources/connections.yaml "
                    "as ${ENV_VAR} and reference the connection as @family.alias",
                )
            _reject_inline_secrets(value, file, f"{field}.{key}")
    elif isinstance(config, list):
        for index, value in enumerate(config):
            _reject_inline_secrets(value, file, f"{field}[{index}]")


@cache
def _pipeline_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / "pipeline.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


@cache
def _validator(component_name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(dict(component_types()[component_name].config_schema))
