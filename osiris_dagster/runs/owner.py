"""Which process runs a run: pid, host and process start time recorded when the run starts.

A local run's process can die without a word (``kill -9``, the OOM killer, a closed laptop):
Dagster then shows the run STARTED forever and its session has no ``status.json``. So the run's
executor writes ``.osiris/runs/<run id>.json`` before its first step (``record_owner``) and
removes it when the run ends (``release_owner``). An owner record whose process is gone on this
host is an abandoned run (``runs.abandoned`` marks it FAILURE and reclaims its debris).

Liveness is decided on this host only: a record written on another host (a shared project
folder) is never judged dead here. A pid alone is not proof: pids are reused, so the record
also keeps the process's start time (``/proc/<pid>/stat``, clock ticks since boot) and a
different start time means a different process. A zombie (killed, not yet reaped by its
parent) counts as dead.

Deliberately not here: what to do with a dead run (``runs.abandoned``). The file lives in
``.osiris/`` rather than in the session directory because a sandboxed run's session directory
is copied back to the host, where the sandbox's pid means nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from osiris_dagster.project import ProjectLayout

__all__ = ["RunOwner", "owners_dir", "read_owners", "record_owner", "release_owner"]

_HAS_PROC = Path("/proc/self/stat").exists()


@dataclass(frozen=True)
class RunOwner:
    run_id: str
    pid: int
    host: str
    process_start: str | None  # /proc start time; None where /proc is not available
    dagster_home: str | None  # the instance holding the run, to mark it there
    started_at: str

    def is_dead(self) -> bool:
        """True only when certain: same host and the process is gone (or a zombie, or another one)."""
        if self.host != socket.gethostname():
            return False
        state = _process_state(self.pid)
        if state is None:
            return True
        status, start = state
        if status == "Z":
            return True
        return self.process_start is not None and start is not None and start != self.process_start


def owners_dir(project: ProjectLayout) -> Path:
    return project.state_dir / "runs"


def record_owner(project: ProjectLayout, run_id: str, dagster_home: str | None) -> RunOwner:
    """Write this process's owner record for ``run_id`` (atomically) and return it."""
    pid = os.getpid()
    state = _process_state(pid)
    owner = RunOwner(
        run_id=run_id,
        pid=pid,
        host=socket.gethostname(),
        process_start=state[1] if state else None,
        dagster_home=dagster_home,
        started_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    folder = owners_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{run_id}.{pid}.tmp"
    temp.write_text(json.dumps(asdict(owner)), encoding="utf-8")
    os.replace(temp, folder / f"{run_id}.json")
    return owner


def release_owner(project: ProjectLayout, run_id: str) -> None:
    """The run ended: its owner record and folder journal (``runs.scratch``) go."""
    with contextlib.suppress(FileNotFoundError):
        (owners_dir(project) / f"{run_id}.json").unlink()
    with contextlib.suppress(FileNotFoundError):
        (owners_dir(project) / f"{run_id}.folders").unlink()


def read_owners(project: ProjectLayout) -> list[RunOwner]:
    folder = owners_dir(project)
    owners: list[RunOwner] = []
    if not folder.is_dir():
        return owners
    for path in folder.glob("*.json"):
        try:
            owners.append(RunOwner(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):  # vanished meanwhile, or not ours: not a live run's record
            continue
    return owners


def _process_state(pid: int) -> tuple[str, str | None] | None:
    """(state letter, start time) of a process, or None when there is no such process."""
    if not _HAS_PROC:
        return _signal_probe(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _signal_probe(pid)
    # Fields after the command name (which may hold spaces and parentheses): state is field 3,
    # starttime field 22.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def _signal_probe(pid: int) -> tuple[str, str | None] | None:
    """Without /proc: signal 0 tells whether the pid exists (start time unknown)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?", None
