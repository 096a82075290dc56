"""Names of a run's scratch files (temp files beside a target, staged-file temps): the run id inside.

A file being written is first written under a scratch name in the target's own folder and
renamed over the target when complete (atomic on POSIX). When the process dies mid-write the
scratch file stays; its name says which run left it, so the next run start can remove the
debris of dead runs (``runs.abandoned``) and never touch a file a live run is still writing.

Name: ``.<target name>.osiris-<run id>.<random>.<kind>`` — hidden, beside the target (same
filesystem, so the rename is atomic), unique per write even within one run.

Deliberately not here: deciding which runs are dead (``runs.owner``).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

__all__ = ["scratch_files_of", "scratch_path", "scratch_run_id"]

_NAME = re.compile(r"^\..+\.osiris-(?P<run>[A-Za-z0-9_-]+)\.[0-9a-f]{8,32}\.(tmp|part)$")


def scratch_path(target: Path, run_id: str | None, kind: str = "tmp") -> Path:
    """A fresh scratch name beside ``target`` for a file ``run_id`` is writing."""
    owner = run_id or "norun"
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
