"""Abandoned runs: a local run whose process died is marked failed and its debris removed.

A run whose owner process (``runs.owner``) is gone from this host while its owner record still
exists never reached its end: it was killed (``kill -9``, OOM, a signal Dagster could not
handle). ``reclaim_abandoned_runs`` then, for each such run:

1. removes its scratch files — in every folder its folder journal names (``runs.scratch``),
   beside the targets recorded in its session's ``cleaned_config.json`` artifacts, and in
   ``.osiris/staging``; complete
   staged files follow the staging retention rule (``runs.retention``);
2. writes its session's ``status.json`` (``ok: false``, reason ``abandoned: ...``) and appends
   ``run_error`` / ``run_end`` events, unless the run got as far as writing its status;
3. marks the Dagster run FAILURE (``report_run_failed``) in the instance that holds it, unless
   Dagster already records it as finished;
4. removes the owner record.

It is called at every run start (the recording executor), by ``osiris-dagster logs list`` and by
the ``osiris_abandoned_runs`` sensor the daemon evaluates, so a dead run is marked at the latest
when one of these looks. Several of them may look at once: each run is reclaimed under an
exclusive ``flock`` on its owner record, and a look that finds it locked leaves it to the other.
A live run's files are never touched: only runs judged dead (same host, process gone) qualify.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osiris_dagster.project import ProjectLayout
from osiris_dagster.runs.owner import RunOwner, owners_dir, read_owners
from osiris_dagster.runs.scratch import journal_path, journaled_folders, scratch_files_of
from osiris_dagster.session.session_log import SessionLog

if TYPE_CHECKING:
    from dagster import DagsterInstance

__all__ = ["ABANDONED", "reclaim_abandoned_runs", "remove_run_debris"]

ABANDONED = "abandoned"


def reclaim_abandoned_runs(
    project: ProjectLayout, instance: DagsterInstance | None = None, *, skip_run_id: str | None = None
) -> list[str]:
    """Reclaim every dead run of this project; returns their run ids."""
    reclaimed: list[str] = []
    for owner in read_owners(project):
        if owner.run_id != skip_run_id and owner.is_dead() and _reclaim(project, owner, instance):
            reclaimed.append(owner.run_id)
    return reclaimed


def remove_run_debris(project: ProjectLayout, run_id: str) -> list[Path]:
    """Remove the scratch files ``run_id`` left beside its targets and in the staging folder."""
    folders: set[Path] = journaled_folders(project, run_id)
    session = SessionLog(project.session_dir(run_id))
    for config_file in (session.directory / "artifacts").glob("*/cleaned_config.json"):
        with contextlib.suppress(OSError, ValueError):
            path = (json.loads(config_file.read_text(encoding="utf-8")).get("config") or {}).get("path")
            if isinstance(path, str):
                folders.add(project.resolve(path).parent)
    if project.staging_dir.is_dir():
        folders.update(p for p in project.staging_dir.glob("*/*") if p.is_dir())
    removed: list[Path] = []
    for folder in folders:
        for path in scratch_files_of(folder, run_id):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _reclaim(project: ProjectLayout, owner: RunOwner, instance: DagsterInstance | None) -> bool:
    record = owners_dir(project) / f"{owner.run_id}.json"
    try:
        fd = os.open(record, os.O_RDONLY)
    except FileNotFoundError:
        return False  # reclaimed meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another process is reclaiming it right now
        if os.fstat(fd).st_nlink == 0:
            return False  # reclaimed (and unlinked) between our open and our lock
        reason = (
            f"{ABANDONED}: the run's process (pid {owner.pid} on {owner.host}) died before the run ended "
            "(killed, e.g. kill -9 or out of memory)"
        )
        remove_run_debris(project, owner.run_id)
        _write_status(project, owner, reason)
        if not _mark_failed(owner, instance, reason):
            return False  # keep the record: the next look retries marking the Dagster run
        record.unlink()
        journal_path(project, owner.run_id).unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _write_status(project: ProjectLayout, owner: RunOwner, reason: str) -> None:
    session = SessionLog(project.session_dir(owner.run_id))
    if session.status_file.exists():
        return
    events = _events(session.events_file)
    start = next((e for e in events if e.get("event") == "run_start"), {})
    completed = [e["step_id"] for e in events if e.get("event") == "step_complete" and "step_id" in e]
    failed = [e["step_id"] for e in events if e.get("event") == "step_failed" and "step_id" in e]
    steps_total = int(start.get("steps_total", 0))
    finished_at = events[-1]["ts"] if events else owner.started_at
    duration_ms = max(0, int((_parse(finished_at) - _parse(owner.started_at)).total_seconds() * 1000))
    session.event("run_error", error=reason, error_type="RunAbandoned")
    session.event(
        "run_end",
        ok=False,
        duration_ms=duration_ms,
        steps_completed=len(completed),
        steps_total=steps_total,
        error=reason,
    )
    session.write_status(
        {
            "session": session.session,
            "run_id": owner.run_id,
            "pipeline": start.get("pipeline", "?"),
            "job": start.get("job", "?"),
            "ok": False,
            "exit_code": 1,
            "reason": reason,
            "steps_total": steps_total,
            "steps_completed": len(completed),
            "steps_failed": failed,
            "sandbox_id": "local",
            "started_at": owner.started_at,
            "finished_at": finished_at,
            "duration_ms": duration_ms,
        }
    )


def _mark_failed(owner: RunOwner, instance: DagsterInstance | None, reason: str) -> bool:
    """Mark the Dagster run FAILURE; False when its instance cannot be reached (retry later)."""
    from dagster import DagsterInstance

    own_home = owner.dagster_home
    if instance is not None and (own_home is None or _same_dir(instance.root_directory, own_home)):
        return _report_failure(instance, owner.run_id, reason)
    if own_home is None or not Path(own_home).is_dir():
        return True  # nothing to mark: the home is gone
    with DagsterInstance.from_config(own_home) as other:
        return _report_failure(other, owner.run_id, reason)


def _report_failure(instance: DagsterInstance, run_id: str, reason: str) -> bool:
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, reason)
    return True


def _same_dir(a: str | None, b: str) -> bool:
    return a is not None and Path(a).resolve() == Path(b).resolve()


def _events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):  # a line torn by the kill
                events.append(json.loads(line))
    return events


def _parse(ts: str) -> datetime:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
