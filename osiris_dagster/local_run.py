"""Running a pipeline's job on this machine through Dagster, after refusing bad input up front.

Everything a run needs from the user — the pipeline, its parameters, the connection profiles
and the environment variables they reference — is checked *before* Dagster starts, so bad
input exits 2 with nothing written (no session directory, no output, no run record).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osiris_dagster.connections import load_profiles
from osiris_dagster.project import PROJECT_DIR_ENV, ProjectLayout
from osiris_dagster.spec.loader import check_step, connection_choice, load_pipeline
from osiris_dagster.spec.model import Pipeline
from osiris_dagster.spec.params import effective_params

DEFINITIONS_MODULE = "osiris_dagster.definitions"
ONE_PIPELINE_ATTRIBUTE = "one_pipeline_defs"
PIPELINE_FILE_ENV = "OSIRIS_PIPELINE_FILE"


@dataclass(frozen=True)
class LocalRunOutcome:
    run_id: str
    ok: bool
    session_dir: Path


def validate_pipeline(project: ProjectLayout, path: Path, params: Mapping[str, Any] | None = None) -> Pipeline:
    """Full validation, connections and their environment variables included (raises InputError)."""
    profiles = load_profiles(project.connections_file)
    pipeline = load_pipeline(path, params=params, connections=profiles, project=project)
    values = effective_params(pipeline.params, params)
    for step in pipeline.steps:
        component, config = check_step(pipeline, step, values, profiles, project)
        if component.connection_families:
            family, alias = connection_choice(
                component,
                config,
                file=str(path),
                field=f"{step.field_prefix}.config.connection",
                connections=profiles,
            )
            assert alias is not None
            profiles.resolve(family, alias)
    return pipeline


def run_pipeline(
    project: ProjectLayout, path: Path, params: Mapping[str, Any] | None = None, *, log_level: str = "WARNING"
) -> LocalRunOutcome:
    pipeline = validate_pipeline(project, path, params)

    from dagster import execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    # The run loads this one pipeline file, not the whole assets/ folder: another file being
    # broken (or slow to load) is no business of this run.
    os.environ[PROJECT_DIR_ENV] = str(project.root)
    os.environ[PIPELINE_FILE_ENV] = str(path.resolve())
    instance = _instance(project)
    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, ONE_PIPELINE_ATTRIBUTE, working_directory=str(project.root)
    )
    job = repository.get_reconstructable_job(pipeline.python_name)
    run_config = {
        "resources": {"osiris_params": {"config": {"values": dict(params or {})}}},
        # The CLI prints its own summary; Dagster's per-event console lines are for --verbose.
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    with instance:
        result = execute_job(job, instance, run_config=run_config)
        return LocalRunOutcome(run_id=result.run_id, ok=result.success, session_dir=project.session_dir(result.run_id))


def dagster_home(project: ProjectLayout) -> Path:
    """`$DAGSTER_HOME` when set (shared with `dagster dev`), else a project-local home.

    The home gets a `dagster.yaml` if it has none, so Dagster does not warn on every command.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or project.state_dir / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch(exist_ok=True)
    return home


def _instance(project: ProjectLayout):  # type: ignore[no-untyped-def]
    from osiris_dagster.instance_storage import open_instance

    # Storage created once under a lock: parallel first runs on a fresh home must not race.
    return open_instance(dagster_home(project))
