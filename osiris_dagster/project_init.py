"""`osiris-dagster init DIR`: a new, runnable project for users who installed the package.

The project is data plus settings, never a copy of the library: `assets/` (the movie demo
pipeline), `resources/connections.yaml`, `workspace.yaml` (for `dagster dev` / `dagster job
execute -w`), a `pyproject.toml` whose `[tool.dg]` table makes it a dg project whose code location
is `osiris_dagster.definitions`, and `defs/` (a package of the project, for pipelines declared as
component instances in `defs.yaml` files; see docs/dg.md).

The demo pipeline, the connection profiles and the workspace file are package data under
`osiris_dagster/starter/`; the repository's own `assets/movies_to_csv.yaml` and
`resources/connections.yaml` are links to those files, so `init` writes exactly what the
repository's demo runs. It refuses to overwrite: if any file it would write exists, nothing is
written (exit 2); a new folder appears whole or not at all.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from osiris_dagster.errors import InputError

STARTER_DIR = Path(__file__).resolve().parent / "starter"
DEFS_PACKAGE = "defs"

_PYPROJECT = """\
# An osiris-dagster project (made by `osiris-dagster init`). Pipelines: assets/*.yaml; connection
# profiles: resources/connections.yaml. Not an installable package: the code lives in osiris-dagster.
[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["osiris-dagster[dg]{requirement}"]

# dg (`dg list defs`, `dg launch --assets ...`): the code location is osiris-dagster's, which loads
# assets/*.yaml and every defs.yaml instance under defs/.
[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "osiris_dagster"
code_location_target_module = "osiris_dagster.definitions"
defs_module = "{defs}"
code_location_name = "{name}"
"""

_DEFS_INIT = '''\
"""Component instances of this project: one folder per instance, each with a defs.yaml, e.g.

    type: osiris_dagster.components.pipeline_component.OmlPipelineComponent
    attributes:
      pipeline_file: pipeline.yaml      # an OML pipeline, relative to this defs.yaml
"""
'''

_GITIGNORE = "# run state written by osiris-dagster and Dagster\nlogs/\noutput/\n.osiris/\n.venv/\n"


def project_files(name: str) -> dict[str, str]:
    """Relative path -> text of every file `init` writes."""
    try:
        requirement = f">={version('osiris-dagster')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        requirement = ""
    files = {
        path.relative_to(STARTER_DIR).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(STARTER_DIR.rglob("*"))
        if path.is_file()
    }
    files["pyproject.toml"] = _PYPROJECT.format(name=name, requirement=requirement, defs=DEFS_PACKAGE)
    files[f"{DEFS_PACKAGE}/__init__.py"] = _DEFS_INIT
    files[".gitignore"] = _GITIGNORE
    return files


def project_name(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-")
    return name or "osiris-project"


def init_project(directory: Path) -> list[str]:
    """Write a new project into `directory`; return the files written.

    A new folder is assembled beside its final place and renamed into it, so a killed `init`
    leaves no half project and two concurrent `init`s of one folder end with one project and one
    refusal. Into an existing folder (e.g. an empty git clone) each file is written to a temporary
    name and renamed."""
    files = project_files(project_name(directory))
    if directory.exists() and not directory.is_dir():
        raise InputError(str(directory), "", "is not a folder")
    existing = sorted(name for name in files if (directory / name).exists())
    if existing:
        raise InputError(str(directory), existing[0], "already exists: init writes only into a new project folder")
    if directory.exists():
        for name, text in files.items():
            _write(directory / name, text)
        return list(files)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.init-", dir=directory.parent))
    try:
        for name, text in files.items():
            _write(staging / name, text)
        try:
            staging.rename(directory)
        except OSError:  # another init (or anything) created the folder meanwhile
            raise InputError(str(directory), "", "already exists: init writes only into a new project folder") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return list(files)


def _write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.init")
    temp.write_text(text, encoding="utf-8")
    temp.replace(target)
