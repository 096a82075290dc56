"""Names of a run's scratch files (temp files beside a target, staged-file temps): the run id inside.

A file being written is first written under a scratch name in the target's own folder and
renamed over the target when complete (atomic on POSIX). When the process dies mid-write the
scratch file stays; its name says which run left it, so the next run start can remove the
debris of dead runs (``runs.abandoned``) and never touch a file a live run is still writing.

Name: ``.<target name>.osiris-<run id>.<random>.<kind>`` — hidden, beside the target (same
filesystem, so the rename is atomic), unique per write even within one run.

Every folder a run creates scratch files in is noted once per process in the run's folder
journal, ``.osiris/runs/<run id>.folders`` (only for runs with an owner record, ``runs.owner``),
so the debris of a run killed before it recorded where it writes — a CSV prepared during the
extraction, say — is still found.

Deliberately not here: deciding which runs are dead (``runs.owner``).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from osiris_dagster.project import ProjectLayout

__all__ = ["journal_path", "journaled_folders", "scratch_files_of", "scratch_path", "scratch_run_id"]

_journaled: set[tuple[str, Path]] = set()

_NAME = re.compile(r"^\..+\.osiris-(?P<run>[A-Za-z0-9_-]+)\.[0-9a-f]{8,32}\.(tmp|part)$")


def scratch_path(target: Path, run_id: str | None, kind: str = "tmp") -> Path:
    """A fresh scratch name beside ``target`` for a file ``run_id`` is writing."""
    owner = run_id or "norun"
    if run_id:
        _journal(run_id, target.parent)
    return target.with_name(f".{target.name}.osiris-{owner}.{uuid.uuid4().hex[:16]}.{kind}")


def scratch_run_id(path: Path) -> str | None:
    """The run whose scratch file this is, or None when the name is not a scratch name."""
    match = _NAME.match(path.name)
    return match.group("run") if match else None


def scratch_files_of(folder: Path, run_id: str) -> list[Path]:
    """The scratch files ``run_id`` left in ``folder``."""
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [p for p in entries if scratch_run_id(p) == run_id]


def journal_path(project: ProjectLayout, run_id: str) -> Path:
    return project.state_dir / "runs" / f"{run_id}.folders"


def journaled_folders(project: ProjectLayout, run_id: str) -> set[Path]:
    try:
        lines = journal_path(project, run_id).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return set()
    return {Path(line) for line in lines if line}


def _journal(run_id: str, folder: Path) -> None:
    """Note ``folder`` in the run's journal, once per process, if the run has an owner record."""
    folder = folder.resolve()
    if (run_id, folder) in _journaled:
        return
    journal = journal_path(ProjectLayout.discover(), run_id)
    if not journal.with_name(f"{run_id}.json").exists():
        return  # not a run of this project (a benchmark, a test writing directly)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{folder}\n".encode())
    finally:
        os.close(fd)
    _journaled.add((run_id, folder))
