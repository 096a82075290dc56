"""The line protocol on a sandbox worker's stdout, shared by the worker and the host relay.

A worker's stdout carries only protocol lines, each ``<SENTINEL><kind> <payload>\\n``:

* ``event <storage id> <serialized EventLogEntry>`` — one Dagster event, in storage-id order;
* ``preflight {"missing": [...], "present": [...]}`` — the dependency check;
* ``installed {"now_present": [...], "still_missing": [...]}`` — after `install_deps`;
* ``started {}`` — the sandbox-local instance is seeded and the run is starting;
* ``result {"path": ..., "files": n, "bytes": n}`` — the result archive is ready to download.

Everything else the worker's processes print goes to stderr. Standard library only: the worker
speaks it before it knows whether Dagster is importable.
"""

from __future__ import annotations

import json
from typing import Any

SENTINEL = "\x1eosiris-e2b\x1f"

EVENT = "event"
PREFLIGHT = "preflight"
INSTALLED = "installed"
STARTED = "started"
RESULT = "result"


def control_line(kind: str, payload: dict[str, Any]) -> str:
    return f"{SENTINEL}{kind} {json.dumps(payload, sort_keys=True)}\n"


def event_line(storage_id: int, serialized_entry: str) -> str:
    return f"{SENTINEL}{EVENT} {storage_id} {serialized_entry}\n"


def parse_line(line: str) -> tuple[str, str] | None:
    """(kind, rest) for a protocol line, None for anything else."""
    if not line.startswith(SENTINEL):
        return None
    kind, _, rest = line[len(SENTINEL) :].partition(" ")
    return kind, rest
