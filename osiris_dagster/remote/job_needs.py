"""What a sandboxed run needs from the host: environment variables and Python modules.

Least privilege: the sandbox receives only the variables that the connection profiles used by the
job's steps reference (`${VAR}`), the run's `OSIRIS_PARAM_*` values for parameters the pipeline
declares (they choose the connection, so without them a remote run would read another database
than a local one), and the launcher's explicit `env_passthrough` list. Nothing else of the host's
environment is forwarded — Osiris forwarded every `*_KEY`/`*_PASSWORD` it found.

The variable names are learnt by resolving each used profile against a recording view of the
environment, i.e. with the product's own resolution rules (`ConnectionProfiles.resolve`), which
also registers the resolved secrets for masking in the supervisor process.

The module list drives the sandbox's dependency preflight: what every run imports, plus the
drivers of the connection families the job's steps use.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from osiris_dagster.connections import load_profiles
from osiris_dagster.errors import InputError
from osiris_dagster.project import ProjectLayout
from osiris_dagster.remote.run_selection import SelectedPipeline
from osiris_dagster.spec.loader import check_step, connection_choice
from osiris_dagster.spec.model import Pipeline, Step
from osiris_dagster.spec.params import PARAM_ENV_PREFIX, effective_params

# Imported by every run of the product, whatever the pipeline.
BASE_MODULES = ("dagster", "pyarrow", "sqlalchemy", "yaml", "jsonschema")
# Drivers per connection family (the MySQL fast path's row reader is the product's own C module).
FAMILY_MODULES: Mapping[str, tuple[str, ...]] = {
    "mysql": ("pymysql",),
    "postgres": ("psycopg",),
    "supabase": ("supabase",),
}
# pip distribution for a module whose name differs from it (for `install_deps`).
MODULE_DISTRIBUTIONS: Mapping[str, str] = {"yaml": "pyyaml", "psycopg": "psycopg[binary]"}


@dataclass(frozen=True)
class JobNeeds:
    env: dict[str, str]
    modules: tuple[str, ...]


class _RecordingEnviron(Mapping[str, str]):
    """The host environment, remembering every name a profile asked for."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.names: set[str] = set()

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.names.add(name)
        return name in self._environ

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        return self._environ[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def job_needs(
    project: ProjectLayout,
    selection: Sequence[SelectedPipeline],
    run_params: Mapping[str, Any],
    *,
    passthrough: tuple[str, ...] = (),
    extra_modules: tuple[str, ...] = (),
    environ: Mapping[str, str],
) -> JobNeeds:
    """The env vars and modules one run of the ``selection`` needs, with `run_params` from its run config."""
    names: set[str] = set()
    modules = list(BASE_MODULES)
    recording = _RecordingEnviron(environ)
    profiles = load_profiles(project.connections_file) if project.connections_file.exists() else None
    for selected in selection:
        pipeline = selected.pipeline
        params = effective_params(pipeline.params, run_params, environ)
        names |= {key for key in environ if _declared_param_env(key, pipeline)}
        for step in selected.steps:
            component, config = check_step(pipeline, step, params)
            if not component.connection_families or profiles is None:
                continue
            family, alias = connection_choice(
                component, config, file=str(pipeline.file), field=step.field_prefix, connections=profiles
            )
            modules.extend(FAMILY_MODULES.get(family, ()))
            # An unset variable fails the run in the sandbox, with the same message as locally.
            with contextlib.suppress(InputError):
                profiles.resolve(family, str(alias), recording)
    names |= recording.names
    names |= set(passthrough)
    env = {name: environ[name] for name in sorted(names) if name in environ}
    modules.extend(extra_modules)
    return JobNeeds(env=env, modules=tuple(dict.fromkeys(modules)))


def loopback_connections(
    project: ProjectLayout,
    selection: Sequence[SelectedPipeline],
    run_params: Mapping[str, Any],
    environ: Mapping[str, str],
) -> list[tuple[str, str]]:
    """``(@family.alias, host)`` of each connection the job uses whose resolved host is loopback.

    For the cloud backend: inside an E2B sandbox 127.0.0.1 is the sandbox itself, so a profile
    defaulting to it (``${MYSQL_HOST:-127.0.0.1}``) would make the run fail minutes later with a
    connection refused. File connections (sqlite) have no host.
    """
    if not project.connections_file.exists():
        return []
    profiles = load_profiles(project.connections_file)
    found: dict[str, str] = {}
    for pipeline, step in _steps(selection):
        params = effective_params(pipeline.params, run_params, environ)
        component, config = check_step(pipeline, step, params)
        if not component.connection_families:
            continue
        family, alias = connection_choice(
            component, config, file=str(pipeline.file), field=step.field_prefix, connections=profiles
        )
        try:
            connection = profiles.resolve(family, str(alias), environ)
        except InputError:
            continue
        host = _connection_host(connection.fields)
        if host is not None and _is_loopback(host):
            found[connection.reference] = host
    return sorted(found.items())


def writes_outside_project(
    project: ProjectLayout,
    selection: Sequence[SelectedPipeline],
    run_params: Mapping[str, Any],
    environ: Mapping[str, str],
) -> list[tuple[str, str]]:
    """``(step id, path)`` of each file the job would write outside the project folder.

    Such a path is allowed locally when the project declares its folder in ``output_roots``
    (``osiris.yaml``), but a sandbox has only a copy of the project, and its result archive brings
    back nothing outside it (``remote/result_archive.py``): the run would succeed and the file
    would never appear. Paths are resolved with the run's parameters, as the step will resolve them.
    """
    root = Path(os.path.realpath(project.root))
    found: list[tuple[str, str]] = []
    for pipeline, step in _steps(selection):
        params = effective_params(pipeline.params, run_params, environ)
        component, config = check_step(pipeline, step, params, project=project)
        if component.name != "filesystem.csv_writer":
            continue
        target = Path(os.path.realpath(project.resolve(str(config["path"]))))
        if not target.is_relative_to(root):
            found.append((step.id, str(target)))
    return found


def _steps(selection: Sequence[SelectedPipeline]) -> Iterator[tuple[Pipeline, Step]]:
    for selected in selection:
        for step in selected.steps:
            yield selected.pipeline, step


def _connection_host(fields: Mapping[str, Any]) -> str | None:
    if fields.get("host"):
        return str(fields["host"])
    for key in ("url", "pg_dsn", "dsn"):
        value = fields.get(key)
        if isinstance(value, str) and "://" in value:
            return urlsplit(value).hostname
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _declared_param_env(key: str, pipeline: Pipeline) -> bool:
    if not key.startswith(PARAM_ENV_PREFIX):
        return False
    name = key[len(PARAM_ENV_PREFIX) :].upper()
    return any(declared.upper() == name for declared in pipeline.params)


def requirements_for(modules: tuple[str, ...] | list[str]) -> dict[str, str]:
    """module -> pip requirement, pinned to the host's installed version when there is one.

    Pinning to the host keeps `install_deps` from pulling a Dagster (or pyarrow) that differs
    from the host's: the serialized run must be read by the same Dagster version.
    """
    requirements = {}
    for module in modules:
        distribution = MODULE_DISTRIBUTIONS.get(module.split(".")[0], module.split(".")[0])
        try:
            requirements[module] = f"{distribution}=={version(distribution.split('[')[0])}"
        except PackageNotFoundError:
            requirements[module] = distribution
    return requirements


# What must be the same release on both sides: Dagster's serialized run, snapshots and events are
# read across the host/sandbox boundary, and the product's pins come with its version.
VERSION_CHECKED_DISTRIBUTIONS = ("dagster", "dagster-shared", "dagster-pipes", "osiris-dagster")


def host_versions() -> dict[str, str]:
    """distribution -> the host's installed version, for the sandbox worker's version check."""
    versions = {}
    for distribution in VERSION_CHECKED_DISTRIBUTIONS:
        with contextlib.suppress(PackageNotFoundError):
            versions[distribution] = version(distribution)
    return versions
