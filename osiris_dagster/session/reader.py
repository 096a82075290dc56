"""Reading a session directory back: for the CLI's summaries, `logs show` and parity checks."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SessionRecord:
    directory: Path
    events: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    status: dict[str, Any] | None

    @classmethod
    def read(cls, directory: Path) -> SessionRecord:
        return cls(
            directory=directory,
            events=_read_jsonl(directory / "events.jsonl"),
            metrics=_read_jsonl(directory / "metrics.jsonl"),
            status=json.loads((directory / "status.json").read_text())
            if (directory / "status.json").exists()
            else None,
        )

    def metric_total(self, name: str) -> float:
        return sum(line["value"] for line in self.metrics if line["metric"] == name)

    def metric_by_step(self, name: str) -> dict[str, float]:
        return {line["step_id"]: line["value"] for line in self.metrics if line["metric"] == name and "step_id" in line}

    def event_counts(self) -> Counter[str]:
        return Counter(line["event"] for line in self.events)

    def artifact_files(self) -> list[str]:
        root = self.directory / "artifacts"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def find_session(logs_dir: Path, run: str) -> Path | None:
    """A session by run id, `run_<id>`, a unique id prefix, or `last`."""
    if not logs_dir.is_dir():
        return None
    sessions = [p for p in logs_dir.iterdir() if p.is_dir() and p.name.startswith("run_")]
    if run == "last":
        return max(
            sessions,
            key=lambda p: (p / "events.jsonl").stat().st_mtime if (p / "events.jsonl").exists() else 0,
            default=None,
        )
    name = run if run.startswith("run_") else f"run_{run}"
    matches = [p for p in sessions if p.name.startswith(name)]
    return matches[0] if len(matches) == 1 else None
