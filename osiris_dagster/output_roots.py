"""Where a pipeline may write files: inside its project folder, or under a declared output root.

A CSV `path` of ``../../x.csv``, ``/etc/x.csv`` or ``output/link/x.csv`` (``link`` a symlink
leading out) would otherwise write outside the project with exit 0. Every write path is resolved
the way the writer will open it (against the project folder, symlinks followed by
``os.path.realpath``) and refused at validation unless it lands inside the project or inside one
of the folders the project lists in its settings file, ``osiris.yaml`` at the project root::

    output_roots:
      - /srv/exports          # absolute
      - ../shared-exports     # relative to the project folder

A settings file rather than a pipeline key: the pipelines are what is being guarded, and a
pipeline that could widen its own sandbox would guard nothing. The product's own folders
(``.osiris/``, ``logs/``) are never valid targets. This module only decides *whether* a path may
be written; the writers do the writing.
"""

from __future__ import annotations

import json
import os
from functools import cache, lru_cache
from pathlib import Path

import jsonschema
import yaml

from osiris_dagster.components.registry import ConfigProblem
from osiris_dagster.errors import InputError
from osiris_dagster.project import ProjectLayout
from osiris_dagster.schemas_dir import SCHEMAS_DIR
from osiris_dagster.strict_yaml import DuplicateKeyError, load_yaml

SETTINGS_FILE = "osiris.yaml"


class ProjectSettingsError(InputError):
    """`osiris.yaml` is malformed."""


def settings_file(project: ProjectLayout) -> Path:
    return project.root / SETTINGS_FILE


def output_roots(project: ProjectLayout) -> tuple[Path, ...]:
    """The folders write paths may resolve into: the project, then the declared roots (resolved)."""
    path = settings_file(project)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (Path(os.path.realpath(project.root)),)
    return _roots(path, stat.st_mtime_ns, stat.st_size)


def resolve_write_path(project: ProjectLayout, text: str, field: str = "path") -> Path:
    """The absolute file a write step's path names; raises `ConfigProblem` when it may not be written."""
    if text.endswith(("/", os.sep)) or text in {".", ".."}:
        raise ConfigProblem(field, f"'{text}' is a directory: name the file to write (e.g. output/table.csv)")
    target = Path(os.path.realpath(project.resolve(text)))
    roots = output_roots(project)
    root = roots[0]
    for reserved in (project.state_dir, project.logs_dir):
        if target.is_relative_to(os.path.realpath(reserved)):
            raise ConfigProblem(field, f"'{text}' is inside {reserved.name}/, which belongs to osiris-dagster")
    if not any(target.is_relative_to(allowed) for allowed in roots):
        raise ConfigProblem(
            field,
            f"'{text}' resolves to {target}, outside the project folder {root}; to write there, list "
            f"the folder under output_roots in {settings_file(project)}",
        )
    if target.is_dir():
        raise ConfigProblem(field, f"'{text}' is a directory: name the file to write (e.g. {text}/table.csv)")
    return target


@lru_cache(maxsize=16)
def _roots(path: Path, _mtime_ns: int, _size: int) -> tuple[Path, ...]:
    try:
        document = load_yaml(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as error:
        raise ProjectSettingsError(str(path), error.field, f"invalid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ProjectSettingsError(str(path), "(document)", f"invalid YAML: {error}") from None
    document = {} if document is None else document
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in errors[0].absolute_path).lstrip(".")
        raise ProjectSettingsError(str(path), where or "(top level)", errors[0].message)
    project_root = Path(os.path.realpath(path.parent))
    declared = [
        Path(os.path.realpath(project_root / Path(root).expanduser())) for root in document.get("output_roots", [])
    ]
    return (project_root, *declared)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / "project.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)
