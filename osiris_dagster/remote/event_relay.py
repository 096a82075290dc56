"""How a sandboxed run's events reach the host instance: stdout chunks in, `handle_new_event` out.

The SDK hands over stdout in raw chunks of up to 32 KiB that split lines anywhere, so the relay
buffers and cuts lines itself. Each event line is masked (`secrets.mask_text`, defence in depth:
the sandbox already masks) and deserialized into an `EventLogEntry`, then given to
``host_instance.handle_new_event`` — not ``store_event`` — so run status, materializations with
their typed metadata and asset check evaluations land on the host exactly as for a local run.

`handle_new_event` does not deduplicate, so the relay keeps a cursor (the sandbox storage id of
the last stored event) in a file and skips anything at or below it: a restarted supervisor that
re-reads the stream stores nothing twice. Events are stored in batches (Dagster's
``batch_metadata`` mechanism) with the cursor written after each batch.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, deserialize_value
from dagster._core.events import DagsterEventBatchMetadata
from dagster._core.events.log import EventLogEntry

from osiris_dagster.remote import relay_protocol as protocol
from osiris_dagster.secrets import mask_text

ControlHandler = Callable[[str, dict[str, Any]], None]


class EventRelay:
    def __init__(
        self,
        instance: DagsterInstance,
        cursor_file: Path,
        on_control: ControlHandler | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> None:
        self._instance = instance
        self._cursor_file = cursor_file
        self._on_control = on_control or (lambda kind, payload: None)
        self._on_text = on_text or (lambda line: None)
        self._partial = ""
        self.cursor = int(cursor_file.read_text()) if cursor_file.exists() else 0
        self.events_stored = 0

    def feed(self, chunk: str) -> None:
        """Take one stdout chunk (any size, any boundary)."""
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        self._handle(lines)

    def close(self) -> None:
        """Handle a last line the stream did not terminate."""
        if self._partial:
            line, self._partial = self._partial, ""
            self._handle([line])

    def _handle(self, lines: list[str]) -> None:
        batch: list[tuple[int, EventLogEntry]] = []
        for line in lines:
            parsed = protocol.parse_line(line)
            if parsed is None:
                if line:
                    self._on_text(mask_text(line))
                continue
            kind, rest = parsed
            if kind == protocol.EVENT:
                storage_id_text, _, serialized = rest.partition(" ")
                storage_id = int(storage_id_text)
                if storage_id > self.cursor:
                    batch.append((storage_id, deserialize_value(mask_text(serialized), EventLogEntry)))
                continue
            self._store(batch)
            batch = []
            self._on_control(kind, json.loads(rest or "{}"))
        self._store(batch)

    def _store(self, batch: list[tuple[int, EventLogEntry]]) -> None:
        if not batch:
            return
        batch_id = uuid.uuid4().hex
        for index, (_, entry) in enumerate(batch):
            metadata = DagsterEventBatchMetadata(batch_id, index == len(batch) - 1)
            self._instance.handle_new_event(entry, batch_metadata=metadata)
        self.cursor = batch[-1][0]
        self.events_stored += len(batch)
        temp = self._cursor_file.with_name(self._cursor_file.name + ".tmp")
        temp.write_text(str(self.cursor))
        os.replace(temp, self._cursor_file)
