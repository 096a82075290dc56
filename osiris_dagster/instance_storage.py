"""Opening the Dagster instance of a home whose storage may not exist yet, from many processes.

Dagster creates a fresh home's storage (the SQLite run, event-log and schedule databases, each
stamped and migrated by alembic) lazily, in whichever process opens it first. Several processes
starting at once on a fresh ``.osiris/dagster_home`` (parallel ``osiris-dagster run``, the daemon
and the webserver of ``dagster dev``) then race in the migrations and one dies with
``alembic ... expected to match one row``: measured 1 failure in 6 concurrent first runs.

So the storage is created once, under an exclusive ``flock`` on ``<home>/.osiris-storage.lock``,
by the first process; the others wait on the lock, find the storage ready and go on. A marker
file (``.osiris-storage-ready``, newer than ``dagster.yaml``) lets every later process skip the
lock altogether. A lock file rather than a retry loop: the loser of a migration race can leave
a half-stamped database that no retry repairs.

Deliberately not here: which home (``local_run.dagster_home``). Storage on PostgreSQL is
created under the same lock, which protects processes on this host only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

__all__ = ["ensure_storage", "open_instance"]

_LOCK = ".osiris-storage.lock"
_READY = ".osiris-storage-ready"


def ensure_storage(home: Path) -> None:
    """Create the home's Dagster storage unless it exists; safe to call from many processes."""
    home = Path(home)
    if _ready(home):
        return
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _ready(home):
            return  # another process created it while we waited
        from dagster import DagsterInstance

        with DagsterInstance.from_config(str(home)) as instance:
            # Touch each storage: Dagster creates (and migrates) them on first use.
            instance.get_runs_count()
            instance.get_latest_materialization_events([])
            instance.all_instigator_state()
        (home / _READY).touch()
    finally:
        os.close(fd)


def open_instance(home: Path) -> DagsterInstance:
    """The home's instance, its storage created first (``ensure_storage``)."""
    from dagster import DagsterInstance

    ensure_storage(home)
    return DagsterInstance.from_config(str(home))


def _ready(home: Path) -> bool:
    try:
        ready = (home / _READY).stat().st_mtime
    except FileNotFoundError:
        return False
    config = home / "dagster.yaml"
    return not config.exists() or config.stat().st_mtime <= ready
