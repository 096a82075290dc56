"""A relaying process, as the supervisor runs it: a host instance, an `EventRelay`, the worker's lines.

    python -m tests.remote.relay_process <dagster home> <run id> <lines file> <cursor file> [<die at>]
        [--resume] [--batch-lines N]

Feeds the lines file in 32 KiB chunks (as the e2b SDK delivers stdout), then releases the held
terminal event — or, with ``--resume``, does what a resumed supervisor does: reconcile with the
host and replay the durable log (the same file) from the stored cursor. ``--batch-lines N`` writes
a batch once N events are pending (the relay coalesces chunks: with its default, a short stream
fed back to back is one or two batches, and the kill points below need several).

``die at`` kills this process with a real SIGKILL at a chosen point of the Nth batch (the tests'
way to land a ``kill -9`` inside a batch, which a timed kill from outside hits only by luck):

* ``mid-batch:N``: the Nth commit of a batch's transaction is about to happen (on SQLite, the
  index shard or ``runs.db`` is committed and the run shard is not; on PostgreSQL, nothing is);
* ``before-cursor:N``: the Nth batch is committed, its cursor not yet written;
* ``before-release``: every line is handled, the terminal event is held and the events after it
  in the stream are stored: the supervisor dies before the copy-back ends;
* ``terminal-run-row``: the run row of the released terminal event is about to be committed (on
  SQLite, the event is committed in its shard and the index shard; on PostgreSQL, nothing is);
* ``pending:N``: the Nth chunk has been fed and left events pending in the coalescing window
  (uncommitted, the cursor before them); the process prints ``pending <first seq> <last seq>``
  and dies with the relay's lock held, so no write can slip in between.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import sqlalchemy as db
from dagster import DagsterInstance

from osiris_dagster.remote.event_relay import EventRelay

CHUNK = 32 * 1024


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(die_at: str) -> None:
    where, _, count = die_at.partition(":")
    remaining = [int(count or 0)]

    def countdown() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            _die()

    if where == "mid-batch":
        # The relay's own engines only: the last commit of a batch is the run shard's (SQLite)
        # or the batch's only one (PostgreSQL), so dying at the commit of the Nth run-shard /
        # PostgreSQL transaction leaves that batch half-stored (SQLite) or uncommitted.
        def on_commit(connection: db.Connection) -> None:
            url = str(connection.engine.url)
            if url.startswith("postgresql") or (url.startswith("sqlite") and RUN_ID in url):
                countdown()

        db.event.listen(db.engine.Engine, "commit", on_commit)
    elif where == "before-cursor":
        original = EventRelay._advance

        def advance(self: EventRelay, seq: int) -> None:
            if seq > self.seen:
                countdown()
            original(self, seq)

        EventRelay._advance = advance  # type: ignore[method-assign]
    elif where == "terminal-run-row":
        releasing = [False]
        release_held = EventRelay.release_held

        def release(self: EventRelay) -> bool:
            releasing[0] = True
            return release_held(self)

        def on_run_row_commit(connection: db.Connection) -> None:
            url = str(connection.engine.url)
            if releasing[0] and (url.startswith("postgresql") or url.endswith("runs.db")):
                _die()

        EventRelay.release_held = release  # type: ignore[method-assign]
        db.event.listen(db.engine.Engine, "commit", on_run_row_commit)
    elif where == "pending":
        feed = EventRelay.feed

        def feed_then_die(self: EventRelay, chunk: str) -> None:
            feed(self, chunk)
            with self._lock:  # the quiet-window thread cannot write while this thread holds it
                if self._pending:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        print(f"pending {self._pending[0][0]} {self._pending[-1][0]}", flush=True)
                        _die()

        EventRelay.feed = feed_then_die  # type: ignore[method-assign]
    elif where == "before-release":

        def release(self: EventRelay) -> bool:
            _die()
            return False

        EventRelay.release_held = release  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown die-at point {die_at!r}")


RUN_ID = ""


def main(argv: list[str]) -> None:
    global RUN_ID
    resume = "--resume" in argv
    args = [arg for arg in argv if arg != "--resume"]
    options: dict[str, int] = {}
    if "--batch-lines" in args:
        at = args.index("--batch-lines")
        options["batch_lines"] = int(args[at + 1])
        del args[at : at + 2]
    home, RUN_ID, lines_file, cursor_file = args[:4]
    if len(args) > 4:
        _arm(args[4])
    lines = Path(lines_file).read_text()
    with DagsterInstance.from_config(home) as instance:
        relay = EventRelay(instance, RUN_ID, Path(cursor_file), read_log=lambda: lines, **options)
        if resume:
            relay.reconcile()
            relay.catch_up()
        else:
            for start in range(0, len(lines), CHUNK):
                relay.feed(lines[start : start + CHUNK])
            relay.close()
        relay.release_held()


if __name__ == "__main__":
    main(sys.argv[1:])
