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
deserialized and stored in batches (`EventBatchWriter`: one transaction per database for a batch's
events, with their effects on the asset index, check and run tables). The run's terminal event
(RUN_SUCCESS, RUN_FAILURE, RUN_CANCELED) is **held back**: the supervisor stores it only after the
result archive is in the project (`release_held`), so a run that reads SUCCESS has its files.

**Coalescing.** A batch is not a chunk: the events of consecutive chunks wait (`pending`) and go in
one transaction once a chunk comes that is shorter than a full read of the stream (`READ_SIZE`:
what was there was all there was, the burst is over), once the oldest of them has waited
`MAX_WAIT_S`, or once `BATCH_LINES` / `BATCH_BYTES` of them are pending — and always before a
control line, `close`, `reconnected`, `catch_up`, `reconcile`, `release_held` and `flush` (what
the supervisor calls before reading the run back). The held terminal event does not end a batch:
the events before and after it go together, and it is written alone at its release. Why: a demo run's 99 events
(~2 KB each) came as ~8 chunks of 32 KiB, so ~8 transactions a run — on SQLite up to three fsynced
commits each, on PostgreSQL ~30 statements — and the demo mix of ``bench/relay.py`` stayed at
~1,360 events/s on either storage against targets of 2,000 (SQLite) and 5,000 (PostgreSQL). The
sandbox's envd and the local sandbox server read the worker's stdout 32 KiB at a time, so full
chunks mean more was queued: the host is behind, and each transaction takes more of them; while
it keeps up, a worker's flush (every 20 ms, `DurableLog.coalesce_stdout`) ends in a short chunk
and is written at once, as before. A quiet window was tried first (write after 5 ms without a
chunk, a thread per window): on the loaded 2-core machine the window ran out between chunks fed
back to back and each window's thread cost a switch, 924 events/s against 1,314 before.

The cost is latency, bounded: a line waits at most `MAX_WAIT_S` (20 ms) for its batch — after a
burst that ended exactly on a full read, one thread for the process (`_Deadlines`) writes the
batch then; a write it fails surfaces at the relay's next call, as a failed write in `feed` would.
Pending lines are in memory only: the cursor never passes them, so a relay that dies with lines
pending stores them again from the durable log on resume, once.

A crash between a committed batch and the cursor file would store that batch again on resume;
`reconcile` closes that window by matching the host's newest stored events against the log.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, deserialize_value
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry

from osiris_dagster.remote import relay_protocol as protocol
from osiris_dagster.remote.event_batches import EffectEvent, EventBatchWriter, PlainEvent, parse_event
from osiris_dagster.secrets import mask_text

log = logging.getLogger(__name__)

# Coalescing (module docstring): a batch is written when a chunk is shorter than a full read (in
# bytes: envd's and the local sandbox server's read size)...
READ_SIZE = 32 * 1024
# ...or its oldest line has waited this long (the latency a line can gain from coalescing)...
MAX_WAIT_S = 0.020
# ...or this many lines / characters of event text are pending (memory and statement size).
BATCH_LINES = 1000
BATCH_BYTES = 4 * 1024 * 1024

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
        *,
        batch_lines: int = BATCH_LINES,
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
        # (seq, event) of the run's terminal event, stored by `release_held`.
        self.held: tuple[int, EffectEvent] | None = None
        # Lines past a held terminal event that a previous relay stored (`reconcile`): not again.
        self._stored_past_held: set[int] = set()
        self.exit_code: int | None = None
        # Coalescing: events handled but not yet written, in line order, past `seen` (None: the
        # held terminal event's place).
        self._pending: list[tuple[int, PlainEvent | EffectEvent | None]] = []
        self._pending_bytes = 0
        self._pending_since = 0.0  # monotonic: when the oldest pending line arrived
        self._arrival = 0.0  # monotonic: when the chunk being handled arrived
        self._batch_lines = batch_lines
        # One lock for all of the relay's state: the stream's thread and `_Deadlines`' thread.
        self._lock = threading.RLock()
        self._armed = False  # a deadline of this relay is in `_DEADLINES`
        self._failure: BaseException | None = None  # of a write by `_Deadlines`' thread

    # -- input ---------------------------------------------------------------------
    def feed(self, chunk: str) -> None:
        """Take one stdout chunk (any size, any boundary); its events may wait for the next ones."""
        with self._lock:
            self._raise_failure()
            text = self._partial + chunk
            lines = text.split("\n")
            self._partial = lines.pop()
            if self._resyncing and lines:
                # The first line after a reconnect may start mid-line: drop it unless it is whole.
                self._resyncing = False
                if protocol.parse_line(lines[0]) is None:
                    lines = lines[1:]
            self._arrival = time.monotonic()
            self._handle(lines, from_log=False)
            if not self._pending:
                return
            drained = len(chunk) < READ_SIZE and len(chunk.encode("utf-8", "replace")) < READ_SIZE
            if drained or self._arrival - self._pending_since >= MAX_WAIT_S:
                self._flush()
            elif not self._armed:
                self._armed = True
                _DEADLINES.arm(self, self._pending_since + MAX_WAIT_S)

    def flush(self) -> None:
        """Write the pending events now (before reading the run's events back, for one)."""
        with self._lock:
            self._raise_failure()
            self._flush()

    def close(self) -> None:
        """Handle a last line the stream did not terminate, and write everything pending."""
        with self._lock:
            self._raise_failure()
            if self._partial:
                line, self._partial = self._partial, ""
                self._handle([line], from_log=False)
            self._flush()

    def reconnected(self) -> None:
        """A new stream begins: forget the old one's partial line."""
        with self._lock:
            self._flush()
            self._partial = ""
            self._resyncing = True

    def catch_up(self) -> None:
        """Handle every complete line of the durable log past the cursor."""
        with self._lock:
            if self._read_log is None:
                raise RelayGapError("lines are missing and there is no durable log to read them from")
            self._flush()
            text = self._read_log()
            complete = text[: text.rfind("\n") + 1]  # the worker may be writing the last line right now
            self._handle(complete.split("\n")[:-1], from_log=True)
            self._flush()

    # -- coalescing ------------------------------------------------------------------
    def _write_overdue(self) -> None:
        """`_Deadlines`' call: write the pending events if the oldest has waited `MAX_WAIT_S`."""
        if not self._lock.acquire(blocking=False):
            # The stream's thread is at work here: ask again later rather than keep other runs'
            # deadlines waiting behind this relay's lock.
            _DEADLINES.arm(self, time.monotonic() + MAX_WAIT_S / 4)
            return
        try:
            self._armed = False
            if not self._pending:
                return
            due = self._pending_since + MAX_WAIT_S
            if due > time.monotonic():  # a batch begun after the deadline was set
                self._armed = True
                _DEADLINES.arm(self, due)
                return
            try:
                self._flush()
            except Exception as error:  # the stream's thread raises it at its next call
                log.warning("storing relayed events failed (stored again from the cursor): %s", error)
                self._failure = error
        finally:
            self._lock.release()

    def _raise_failure(self) -> None:
        """A write of `_Deadlines`' thread failed: fail this call as that write would have failed it.

        The failed batch's lines are past `seen`, so the stream's next lines show a gap, which the
        supervisor's reattach-and-catch-up (or the gap fill) closes from the durable log.
        """
        if self._failure is not None:
            error, self._failure = self._failure, None
            raise error

    def _pend(self, seq: int, item: PlainEvent | EffectEvent | None, size: int) -> None:
        if not self._pending:
            self._pending_since = self._arrival
        self._pending.append((seq, item))
        self._pending_bytes += size
        if len(self._pending) >= self._batch_lines or self._pending_bytes >= BATCH_BYTES:
            self._flush()

    def _next_seq(self) -> int:
        return (self._pending[-1][0] if self._pending else self.seen) + 1

    # -- handling --------------------------------------------------------------------
    def _handle(self, lines: list[str], *, from_log: bool) -> None:
        """Handle lines in order: events join the pending batch; anything else writes it first."""
        for index, line in enumerate(lines):
            parsed = protocol.parse_line(line)
            if parsed is None:
                if line and not from_log:
                    self._on_text(mask_text(line))
                continue
            expected = self._next_seq()
            if parsed.seq < expected:
                continue  # handled already
            if parsed.seq > expected:
                if from_log:
                    raise RelayGapError(f"the durable log skips from line {expected - 1} to {parsed.seq}")
                self.catch_up()  # fills the gap, and more: the log holds all the stream has printed
                self._handle(lines[index:], from_log=False)
                return
            if parsed.kind == protocol.EVENT and parsed.seq in self._stored_past_held:
                self._flush()
                self._advance(parsed.seq)
                continue
            if parsed.kind == protocol.EVENT:
                masked = mask_text(parsed.payload)
                event = parse_event(masked)
                if isinstance(event, EffectEvent) and event.event_type in TERMINAL_EVENTS:
                    # Held: it keeps its place in the batch (the events around it go in one
                    # transaction) but is written by `release_held`; the cursor stays before it.
                    self.held = (parsed.seq, event)
                    self._pend(parsed.seq, None, 0)
                    continue
                self._pend(parsed.seq, event, len(masked))
                continue
            self._flush()
            self._advance(parsed.seq)
            payload = parsed.json()
            if parsed.kind == protocol.EXIT:
                self.exit_code = int(payload.get("code", 1))
            self._on_control(parsed.kind, payload)

    def _flush(self) -> None:
        """Write the pending events in one batch; a failed write drops them (they are past `seen`:
        the stream or the durable log delivers them again)."""
        if not self._pending:
            return
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        items = [item for _, item in batch if item is not None]
        if items:
            self._writer.store(items)
            self.events_stored += len(items)
        self._advance(batch[-1][0])

    def _advance(self, seq: int) -> None:
        """Lines up to ``seq`` are handled (nothing is pending before them); persist that, but never
        past a held terminal event."""
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
        with self._lock:
            self._raise_failure()
            self._flush()  # the events printed after it: stored before it, as the stream had them
            if self.held is None:
                return False
            seq, event = self.held
            self._writer.store([event])
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
        with the batches that follow: a relay that died before releasing it leaves them stored past
        the cursor, behind the terminal event, which is not stored. So an unstored terminal event
        does not end the prefix: the stored events after it are remembered and skipped when the log
        is replayed.
        """
        self.flush()
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


# The host can be ahead of the cursor by one batch: at most BATCH_LINES events, so twice that.
_RECONCILE_WINDOW = 2 * BATCH_LINES


class _Deadlines:
    """One thread for the process: writes a relay's pending events when the oldest has waited
    `MAX_WAIT_S` and the relay's stream brought nothing since (a burst that ended on a full read).

    One thread for all relays, not one per relay or batch: it is rarely needed (a short chunk, or
    the next chunk, writes the batch first), and starting or waking a thread per batch cost a
    switch of threads per batch on the loaded machine. A deadline whose batch was written meanwhile
    is dropped when it falls due (`EventRelay._write_overdue`); a relay has one in here at most.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, EventRelay]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, relay: EventRelay, due: float) -> None:
        with self._wake:
            entry = (due, next(self._order), relay)
            heapq.heappush(self._due, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="relay-deadlines", daemon=True)
                self._thread.start()
            elif self._due[0] is entry:  # earlier than what the thread sleeps for
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due:
                    self._wake.wait()
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                _, _, relay = heapq.heappop(self._due)
            try:
                relay._write_overdue()
            except Exception:  # never let one relay end the deadlines of all
                log.exception("writing a relay's overdue events")


_DEADLINES = _Deadlines()


def _identity(entry: EventLogEntry) -> tuple[float, str | None, str]:
    return (entry.timestamp, entry.dagster_event_type.value if entry.dagster_event_type else None, entry.user_message)
