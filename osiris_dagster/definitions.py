"""The code location: every pipeline in the project's `assets/` folder, as Dagster definitions.

Loaded by `workspace.yaml` (`dagster dev -w workspace.yaml`), by `-m osiris_dagster.definitions`
(`dagster job execute -m osiris_dagster.definitions -j <job>`), and by dg (`dg list defs`, `dg
launch`: `[tool.dg.project] code_location_target_module` in the project's pyproject.toml). The
project folder is `$OSIRIS_PROJECT_DIR`, else the current directory; it is exported here so run
workers started from this process resolve the same one.

Besides `assets/*.yaml`, a dg project's defs folder (`[tool.dg.project] defs_module`, `defs/` in
a project made by `osiris-dagster init`) is loaded with Dagster's own `load_from_defs_folder`, so
pipelines declared as `OmlPipelineComponent` instances in `defs.yaml` files join the same code
location (docs/dg.md).

One file cannot take down the others: a pipeline file that does not validate (or whose name
another file already uses) becomes a *broken pipeline* asset and job named after the file
(`components.broken_pipeline`), carrying the error, and a warning is logged; every valid pipeline
loads as usual. `osiris-dagster run` loads only the pipeline it runs (`one_pipeline_defs`).

`defs` is built on first access (module `__getattr__`), so importing this module for
`one_pipeline_defs` does not load the whole folder.
"""

from __future__ import annotations

import logging
import os
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from osiris_dagster.components.abandoned_runs import abandoned_runs_sensor
from osiris_dagster.components.broken_pipeline import BROKEN_PIPELINES_METADATA_KEY, broken_pipeline_defs
from osiris_dagster.components.pipeline_component import OmlPipelineComponent
from osiris_dagster.components.resources import pipeline_resources
from osiris_dagster.components.sensors import run_alert_sensor
from osiris_dagster.errors import InputError, PipelineSpecError
from osiris_dagster.local_run import PIPELINE_FILE_ENV
from osiris_dagster.project import PROJECT_DIR_ENV, ProjectLayout
from osiris_dagster.remote.sandbox_reaper import e2b_sandbox_reaper
from osiris_dagster.secrets import mask_text
from osiris_dagster.session.recording_executor import osiris_executor

logger = logging.getLogger("osiris_dagster.definitions")


def build_definitions(project: ProjectLayout | None = None, files: Iterable[Path] | None = None) -> dg.Definitions:
    project = project or ProjectLayout.discover()
    os.environ.setdefault(PROJECT_DIR_ENV, str(project.root))
    pipelines: list[dg.Definitions] = []
    broken: dict[str, str] = {}
    names: dict[str, Path] = {}
    for path in project.pipeline_files() if files is None else files:
        try:
            defs = dg.build_defs_for_component(
                OmlPipelineComponent(pipeline_file=str(path), project_dir=str(project.root))
            )
            name = next(iter(defs.jobs or ())).name
            if name in names:
                raise PipelineSpecError(str(path), "name", f"job '{name}' is already defined by {names[name].name}")
            names[name] = path
            pipelines.append(defs)
        except Exception as error:  # any failure of one file is that file's, shown in Dagster
            message = mask_text(_cause(error))
            logger.warning("broken pipeline file %s: %s", project.relative(path), message)
            broken[project.relative(path)] = message
            pipelines.append(broken_pipeline_defs(project, path, message, taken=set(names)))
    # The executor is the location's default, so the implicit asset job (UI Materialize, selections
    # across pipelines, backfills, `dagster asset materialize`) runs and records like a pipeline job;
    # one run-failure sensor watches every run of the location; one sensor lets the daemon mark runs
    # whose process died (components/abandoned_runs.py); the sandbox reaper kills sandboxes of finished
    # remote runs (it does nothing unless the instance's launcher is E2BRunLauncher).
    location = dg.Definitions(
        resources=pipeline_resources(),
        sensors=[run_alert_sensor, abandoned_runs_sensor, e2b_sandbox_reaper],
        executor=osiris_executor,
        metadata={BROKEN_PIPELINES_METADATA_KEY: dg.MetadataValue.json(broken)} if broken else None,
    )
    instances = _defs_folder(project) if files is None else []
    return dg.Definitions.merge(*pipelines, *instances, location)


def _defs_folder(project: ProjectLayout) -> list[dg.Definitions]:
    """The dg defs folder's component instances, when the project is a dg project that has one."""
    pyproject = project.root / "pyproject.toml"
    if not pyproject.is_file():
        return []
    settings = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("dg", {}).get("project", {})
    defs_module = settings.get("defs_module")
    if not defs_module or not (project.root / defs_module.replace(".", "/")).is_dir():
        return []
    # The defs folder is a package of the project folder, which is not installed: make it importable
    # however the code location was started (`-m`, a workspace, the CLI with --project-dir).
    if str(project.root) not in sys.path:
        sys.path.insert(0, str(project.root))
    return [dg.load_from_defs_folder(path_within_project=project.root)]


def one_pipeline_defs() -> dg.Definitions:
    """The definitions of ONE pipeline file, ``$OSIRIS_PIPELINE_FILE``: what `osiris-dagster run`
    executes (called by Dagster on every load, so one process can run several pipelines)."""
    return build_definitions(files=[Path(os.environ[PIPELINE_FILE_ENV])])


def _cause(error: BaseException) -> str:
    """The user's error (field and message: the file is named beside it), not a wrapper's."""
    while error.__cause__ is not None and not isinstance(error, InputError):
        error = error.__cause__
    if isinstance(error, InputError):
        return f"{error.field}: {error.message}" if error.field else error.message
    return f"{type(error).__name__}: {error}"


def __getattr__(name: str) -> dg.Definitions:
    if name == "defs":
        value = build_definitions()
        globals()["defs"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # Dagster finds a module's Definitions through dir() (`-m osiris_dagster.definitions` without
    # `-a`, and dg's `code_location_target_module`): the lazy `defs` must be listed there.
    return sorted({*globals(), "defs"})
