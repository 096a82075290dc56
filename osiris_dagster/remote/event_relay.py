"""How a sandboxed run's lines reach the host instance: exactly once, in order, from stream or log.

The worker numbers its lines (`relay_protocol`) and keeps them in a durable log in the sandbox.
The relay keeps a **cursor**: the sequence number of the last line it handled, persisted in a
file after every batch. Lines come from two places:

* the command's stdout stream (the fast path): raw chunks of up to 32 KiB that cut lines
  anywhere, so the relay buffers and splits them itself;
* the durable log (`read_log`), read back when the stream skips ahead — after a dropped stream
  and a reconnect, lines printed while nobody listened are missing from the stream — or when a
  new supervisor resumes the run.

A line at or below the cursor was handled already and is skipped; a line more than one past it
means a gap, which is filled from the log before anything after it is handled. So a line is
handled exactly once whatever mix of streams and log reads delivered it.

Event lines are masked (`secrets.mask_text`, defence in depth: the sandbox masks already),
deserialized and stored in batches (`EventBatchWriter`: one transaction per database for a chunk's
events, with their effects on the asset index, check and run tables). The run's terminal event
(RUN_SUCCESS, RUN_FAILURE, RUN_CANCELED) is **held back**: the supervisor stores it only after the
result archive is in the project (`release_held`), so a run that reads SUCCESS has its files.

A crash between a committed batch and the cursor file would store that batch again on resume;
`reconcile` closes that window by matching the host's newest stored events against the log.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, deserialize_value
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry

from osiris_dagster.remote import relay_protocol as protocol
from osiris_dagster.remote.event_batches import EffectEvent, EventBatchWriter, PlainEvent
from osiris_dagster.secrets import mask_text

ControlHandler = Callable[[str, dict[str, Any]], None]

TERMINAL_EVENTS = frozenset({DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED})


class RelayGapError(RuntimeError):
    """The stream skipped lines that the durable log does not hold (yet)."""


class EventRelay:
    def __init__(
        self,
        instance: DagsterInstance,
        run_id: str,
        cursor_file: Path,
        on_control: ControlHandler | None = None,
        on_text: Callable[[str], None] | None = None,
        read_log: Callable[[], str] | None = None,
    ) -> None:
        self._instance = instance
        self._writer = EventBatchWriter(instance)
        self._cursor_file = cursor_file
        self._on_control = on_control or (lambda kind, payload: None)
        self._on_text = on_text or (lambda line: None)
        self._read_log = read_log
        self._partial = ""
        self._resyncing = False
        self.cursor = int(cursor_file.read_text()) if cursor_file.exists() else 0
        self.seen = self.cursor  # handled in this process (may pass the cursor: see `held`)
        self._run_id = run_id
        self.events_stored = 0
        # (seq, entry) of the run's terminal event, stored by `release_held`.
        self.held: tuple[int, EventLogEntry] | None = None
        # Lines past a held terminal event that a previous relay stored (`reconcile`): not again.
        self._stored_past_held: set[int] = set()
        self.exit_code: int | None = None

    # -- input ---------------------------------------------------------------------
    def feed(self, chunk: str) -> None:
        """Take one stdout chunk (any size, any boundary)."""
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        if self._resyncing and lines:
            # The first line after a reconnect may start mid-line: drop it unless it is whole.
            self._resyncing = False
            if protocol.parse_line(lines[0]) is None:
                lines = lines[1:]
        self._handle(lines, from_log=False)

    def close(self) -> None:
        """Handle a last line the stream did not terminate."""
        if self._partial:
            line, self._partial = self._partial, ""
            self._handle([line], from_log=False)

    def reconnected(self) -> None:
        """A new stream begins: forget the old one's partial line."""
        self._partial = ""
        self._resyncing = True

    def catch_up(self) -> None:
        """Handle every complete line of the durable log past the cursor."""
        if self._read_log is None:
            raise RelayGapError("lines are missing and there is no durable log to read them from")
        text = self._read_log()
        complete = text[: text.rfind("\n") + 1]  # the worker may be writing the last line right now
        self._handle(complete.split("\n")[:-1], from_log=True)

    # -- handling --------------------------------------------------------------------
    def _handle(self, lines: list[str], *, from_log: bool) -> None:
        batch: list[tuple[int, PlainEvent | EffectEvent]] = []
        for index, line in enumerate(lines):
            parsed = protocol.parse_line(line)
            if parsed is None:
                if line and not from_log:
                    self._on_text(mask_text(line))
                continue
            expected = (batch[-1][0] if batch else self.seen) + 1
            if parsed.seq < expected:
                continue  # handled already
            if parsed.seq > expected:
                if from_log:
                    raise RelayGapError(f"the durable log skips from line {expected - 1} to {parsed.seq}")
                self._store(batch)
                self.catch_up()  # fills the gap, and more: the log holds all the stream has printed
                self._handle(lines[index:], from_log=False)
                return
            if parsed.kind == protocol.EVENT and parsed.seq in self._stored_past_held:
                self._store(batch)
                batch = []
                self._advance(parsed.seq)
                continue
            if parsed.kind == protocol.EVENT:
                masked = mask_text(parsed.payload)
                plain = PlainEvent.parse(masked)
                if plain is not None:
                    batch.append((parsed.seq, plain))
                    continue
                effect = EffectEvent.parse(masked)
                if effect.entry.dagster_event_type in TERMINAL_EVENTS:
                    self._store(batch)
                    batch = []
                    self.held = (parsed.seq, effect.entry)
                    self._advance(parsed.seq)  # the persisted cursor stays before it until released
                    continue
                batch.append((parsed.seq, effect))
                continue
            self._store(batch)
            batch = []
            self._advance(parsed.seq)
            payload = parsed.json()
            if parsed.kind == protocol.EXIT:
                self.exit_code = int(payload.get("code", 1))
            self._on_control(parsed.kind, payload)
        self._store(batch)

    def _store(self, batch: list[tuple[int, PlainEvent | EffectEvent]]) -> None:
        if not batch:
            return
        self._writer.store([entry for _, entry in batch])
        self.events_stored += len(batch)
        self._advance(batch[-1][0])

    def _advance(self, seq: int) -> None:
        """Lines up to ``seq`` are handled; persist that, but never past a held terminal event."""
        self.seen = max(self.seen, seq)
        durable = self.seen if self.held is None else self.held[0] - 1
        if durable > self.cursor:
            self.cursor = durable
            temp = self._cursor_file.with_name(self._cursor_file.name + ".tmp")
            temp.write_text(str(self.cursor))
            os.replace(temp, self._cursor_file)

    # -- the end -------------------------------------------------------------------
    def release_held(self) -> bool:
        """Store the held terminal event (the project has the run's files now); True if there was one."""
        if self.held is None:
            return False
        seq, entry = self.held
        self._writer.store([entry])
        self.events_stored += 1
        self.held = None
        self._advance(seq)
        return True

    def reconcile(self) -> None:
        """After a crash: skip log lines whose events the host stored although the cursor missed them.

        A batch is committed before the cursor file is written, so a crash in between leaves the
        host ahead of the cursor by at most one batch (a prefix of the lines after the cursor). An
        event is identified by (timestamp, type, message), set in the sandbox and never by the host.

        The cursor never passes a held terminal event, but the events printed after it are stored
        as they come: a relay that died before releasing it leaves them stored past the cursor,
        behind the terminal event, which is not stored. So an unstored terminal event does not end
        the prefix: the stored events after it are remembered and skipped when the log is replayed.
        """
        if self._read_log is None:
            return
        records = self._instance.get_records_for_run(self._run_id, ascending=False, limit=_RECONCILE_WINDOW).records
        stored = {_identity(record.event_log_entry) for record in records}
        found: list[EventLogEntry] = []
        past_terminal = False
        text = self._read_log()
        for line in text[: text.rfind("\n") + 1].split("\n")[:-1]:
            parsed = protocol.parse_line(line)
            if parsed is None or parsed.seq <= self.cursor:
                continue
            if parsed.kind != protocol.EVENT:
                break  # controls are re-handled harmlessly; an event after one would have been stored later
            entry = deserialize_value(mask_text(parsed.payload), EventLogEntry)
            if _identity(entry) not in stored:
                if entry.dagster_event_type in TERMINAL_EVENTS and not past_terminal:
                    past_terminal = True  # held when the relay died: stored only at its release
                    continue
                break
            found.append(entry)
            if past_terminal:
                self._stored_past_held.add(parsed.seq)
            else:
                self._advance(parsed.seq)
        # The events were committed; a run-status event's run row maybe not (SQLite: a database of its own).
        self._writer.restore_run_effects(found)


_RECONCILE_WINDOW = 2000


def _identity(entry: EventLogEntry) -> tuple[float, str | None, str]:
    return (entry.timestamp, entry.dagster_event_type.value if entry.dagster_event_type else None, entry.user_message)
