"""The host-side files of one remote run: ``<DAGSTER_HOME>/e2b/<run id>/``.

Shared by the launcher (which writes the spec and reads the log for run monitoring) and the
supervisor (which reads the spec, writes the log and the relay cursor). Kept apart from both so
the launcher never imports the e2b SDK just to find a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TAIL_LINES = 40


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

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
