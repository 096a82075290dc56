"""The line protocol of a sandbox worker, shared by the worker and the host relay.

Every line the worker emits is ``<SENTINEL><seq> <kind> <payload>\\n``, where ``seq`` counts the
worker's lines from 1 without gaps:

* ``event <serialized EventLogEntry>`` — one Dagster event, in the sandbox's storage order;
* ``preflight {"missing": [...], "present": [...]}`` — the dependency check;
* ``installed {"now_present": [...], "still_missing": [...]}`` — after `install_deps`;
* ``started {}`` — the sandbox-local instance is seeded and the run is starting;
* ``result {"name": ..., "files": n, "bytes": n}`` — the result archive is ready to download;
* ``exit {"code": n}`` — the worker's last line: it is about to exit with that code.

Each line goes twice: appended to the sandbox's durable log (``DURABLE_LOG``, flushed before the
line is printed), then printed on stdout. stdout is the fast path; the log is what the host reads
back after a dropped stream or a lost host process, from the sequence number it had stored last.
Because ``seq`` is the worker's own counter (not the stream's), the host can mix lines from a
reconnected stream and from the log and still handle each line exactly once.

Everything else the worker's processes print goes to stderr. Standard library only: the worker
speaks it before it knows whether Dagster is importable.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

SENTINEL = "\x1eosiris-e2b\x1f"
# In the sandbox's working directory (``~/osiris``), beside the bundle.
DURABLE_LOG = "relay.log"

EVENT = "event"
PREFLIGHT = "preflight"
INSTALLED = "installed"
STARTED = "started"
RESULT = "result"
EXIT = "exit"


def protocol_line(seq: int, kind: str, payload: str) -> str:
    return f"{SENTINEL}{seq} {kind} {payload}\n"


def control_payload(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True)


@dataclass(frozen=True)
class Line:
    seq: int
    kind: str
    payload: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.payload or "{}")


def parse_line(line: str) -> Line | None:
    """The protocol line, or None for anything else (including a line cut at a reconnect)."""
    if not line.startswith(SENTINEL):
        return None
    seq_text, _, rest = line[len(SENTINEL) :].partition(" ")
    if not seq_text.isdigit():
        return None
    kind, _, payload = rest.partition(" ")
    return Line(int(seq_text), kind, payload)


class DurableLog:
    """The worker's side: number each line, append it to the durable log, then print it.

    The line counter lives in an anonymous shared memory page, so a child forked by the worker
    (the run's executing process, which relays events as they are stored) and the worker itself
    count on ONE sequence: the worker's control lines after the run continue where the child's
    events stopped. They never write at the same time (the worker waits for the child).

    Each line reaches the durable log at once. Printing can be coalesced (`coalesce_stdout`): the
    host stores what one stdout chunk brings in one transaction, so a line flushed per event
    would cost the host a commit per event.
    """

    def __init__(self, path: str, stdout: Any) -> None:
        # Line-buffered append: each line reaches the file (the page cache survives the worker's
        # death; only the sandbox's death loses it, and then the run is lost anyway).
        self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (lives as long as the worker)
        self._stdout = stdout
        self._counter = mmap.mmap(-1, 8)  # MAP_SHARED: shared with forked children
        self._stdout_lock = threading.Lock()
        self._coalescing = False
        self._unflushed = False

    @property
    def seq(self) -> int:
        return int(struct.unpack_from("<q", self._counter)[0])

    def keep_stdout(self) -> None:
        """Keep printing to the current stdout after this process points its fd 1 elsewhere."""
        self._stdout.flush()
        self._stdout = os.fdopen(os.dup(self._stdout.fileno()), "w", encoding="utf-8")

    def coalesce_stdout(self, interval_s: float) -> None:
        """From now on flush stdout at most every ``interval_s`` (a daemon thread; call `flush` last)."""
        self._coalescing = True
        threading.Thread(target=self._flush_every, args=(interval_s,), name="relay-flush", daemon=True).start()

    def _flush_every(self, interval_s: float) -> None:
        while True:
            time.sleep(interval_s)
            self.flush()

    def flush(self) -> None:
        with self._stdout_lock:
            if self._unflushed:
                self._stdout.flush()
                self._unflushed = False

    def emit(self, kind: str, payload: str) -> None:
        self.emit_many([(kind, payload)])

    def emit_many(self, items: list[tuple[str, str]]) -> None:
        seq = self.seq
        lines = []
        for kind, payload in items:
            seq += 1
            lines.append(protocol_line(seq, kind, payload))
        struct.pack_into("<q", self._counter, 0, seq)
        text = "".join(lines)
        self._file.write(text)
        self._file.flush()
        with self._stdout_lock:
            self._stdout.write(text)
            if self._coalescing:
                self._unflushed = True
            else:
                self._stdout.flush()

    def control(self, kind: str, payload: dict[str, Any]) -> None:
        self.emit(kind, control_payload(payload))
