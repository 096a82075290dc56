"""The host-side files of one remote run: ``<DAGSTER_HOME>/e2b/<run id>/``.

Shared by the launcher (which writes the spec and reads the log for run monitoring) and the
supervisor (which reads the spec, writes the log and the relay cursor). Kept apart from both so
the launcher never imports the e2b SDK just to find a file.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_TAIL_LINES = 40
# Retention of a finished run's folder: long enough to read its supervisor log after an incident.
RETENTION_S = 24 * 3600


@dataclass(frozen=True)
class RunFiles:
    """The supervisor's own files for one run, under ``<DAGSTER_HOME>/e2b/<run id>/``."""

    root: Path

    @classmethod
    def for_run(cls, instance_root: str | os.PathLike[str], run_id: str) -> RunFiles:
        return cls(Path(instance_root) / "e2b" / run_id)

    @property
    def spec(self) -> Path:
        return self.root / "supervisor.json"

    @property
    def log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def relay_cursor(self) -> Path:
        """Sequence number of the last worker line handled (`EventRelay`)."""
        return self.root / "relay.cursor"

    @property
    def state(self) -> Path:
        """Sandbox id, worker pid and what the supervisor learnt: what a resume starts from."""
        return self.root / "state.json"

    @property
    def cancel(self) -> Path:
        """Created by `E2BRunLauncher.terminate`: the run's supervisor, wherever it runs, cancels."""
        return self.root / "cancel"

    @property
    def supervision_lock(self) -> Path:
        """Locked by whoever supervises the run, for as long as it does (`run_lock`)."""
        return self.root / "supervision.lock"

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def prune_run_folders(
    e2b_root: Path, is_finished: Callable[[str], bool], retention_s: float = RETENTION_S, now: float | None = None
) -> list[str]:
    """Delete the folders of finished (or unknown) runs untouched for ``retention_s``; return their run ids.

    The rule (docs/remote-runs.md): a run's folder stays while the run is in progress — a resume
    needs its spec, state and cursor — and for ``RETENTION_S`` after its last write, for the
    supervisor log; then the next run that ends deletes it. Folders that are not a run's (the
    sandbox instance template, pool locks) have no ``supervisor.json`` and are never touched.
    """
    now = time.time() if now is None else now
    pruned = []
    for folder in e2b_root.iterdir() if e2b_root.is_dir() else []:
        files = RunFiles(folder)
        try:
            if not files.spec.is_file():
                continue
            newest = max(entry.stat().st_mtime for entry in folder.iterdir())
        except OSError:  # pruned by a concurrent supervisor meanwhile
            continue
        if now - newest < retention_s or not is_finished(folder.name):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        pruned.append(folder.name)
    return pruned
