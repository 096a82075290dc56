"""A run's session directory: `logs/run_<run id>/` with events, metrics, artifacts and status.

Every line is masked (`secrets.mask_secrets`) before it is written, and each line goes out in a
single `write()` on a file opened with O_APPEND, so steps running in several processes (the
multiprocess executor) can share one file without tearing lines. Names are checked against the
catalogue: an event or metric the schema does not declare is a bug, and fails loudly here.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osiris_dagster.secrets import mask_secrets
from osiris_dagster.session.catalogue import catalogue


def file_sha256(path: Path) -> str:
    """Content hash of a file the run wrote, as recorded in events and compared by parity."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class SessionLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.session = directory.name

    @property
    def events_file(self) -> Path:
        return self.directory / "events.jsonl"

    @property
    def metrics_file(self) -> Path:
        return self.directory / "metrics.jsonl"

    @property
    def status_file(self) -> Path:
        return self.directory / "status.json"

    def artifacts_dir(self, step_id: str) -> Path:
        return self.directory / "artifacts" / step_id

    def event(self, name: str, **fields: Any) -> None:
        if name not in catalogue().events:
            raise ValueError(f"event '{name}' is not declared in schemas/events.schema.json")
        self._append(self.events_file, {"ts": utc_now(), "session": self.session, "event": name, **fields})

    def metric(self, name: str, value: float, *, step_id: str | None = None) -> None:
        cat = catalogue()
        if name not in cat.metrics:
            raise ValueError(f"metric '{name}' is not declared in schemas/metrics.schema.json")
        line: dict[str, Any] = {
            "ts": utc_now(),
            "session": self.session,
            "metric": name,
            "value": value,
            "unit": cat.metric_units[name],
        }
        if step_id is not None:
            line["step_id"] = step_id
        self._append(self.metrics_file, line)

    def write_artifact(self, step_id: str, name: str, content: bytes | str) -> Path:
        """Write one artifact file (already masked by the caller where it holds config)."""
        directory = self.artifacts_dir(step_id)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        data = content.encode("utf-8") if isinstance(content, str) else content
        temp = path.with_name(f".{name}.tmp")
        temp.write_bytes(data)
        os.replace(temp, path)
        return path

    def write_cleaned_config(self, step_id: str, config: dict[str, Any]) -> tuple[Path, int, str]:
        """`artifacts/<step>/cleaned_config.json`: the config the driver receives, masked."""
        text = json.dumps(mask_secrets(config), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        path = self.write_artifact(step_id, "cleaned_config.json", text)
        data = text.encode("utf-8")
        return path, len(data), hashlib.sha256(data).hexdigest()

    def write_status(self, status: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temp = self.status_file.with_name(".status.json.tmp")
        temp.write_text(json.dumps(mask_secrets(status), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temp, self.status_file)

    def _append(self, path: Path, line: dict[str, Any]) -> None:
        data = (json.dumps(mask_secrets(line), ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
