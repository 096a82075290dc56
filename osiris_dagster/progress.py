"""Progress of a long extract or write: rows so far, rows/s and elapsed, at most every 5 s.

Sources and targets call a ``RowProgress`` with their running row count after every batch; it
logs one line when at least ``interval_s`` passed since the last one, through the logger it was
given. Steps give it Dagster's ``context.log``, so the lines are in the UI's run log and in
``osiris-dagster run -v``. After the step, ``rows_per_second`` is the figure each materialization
records.

Deliberately not here: what counts as a row (the caller's count), and any metric or event (the
step records ``rows_per_second`` once, at the end).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["PROGRESS_INTERVAL_S", "RowProgress"]

PROGRESS_INTERVAL_S = 5.0


class RowProgress:
    def __init__(
        self,
        log: Any,
        what: str,
        *,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.what, self.interval_s, self.clock = log, what, interval_s, clock
        self.started = self.last = clock()
        self.rows = 0

    def __call__(self, rows: int) -> None:
        self.rows = rows
        now = self.clock()
        if now - self.last >= self.interval_s:
            self.last = now
            elapsed = now - self.started
            self.log.info(f"{self.what}: {rows:,} rows so far, {rows / elapsed:,.0f} rows/s, {elapsed:.1f} s elapsed")

    @property
    def rows_per_second(self) -> float:
        elapsed = self.clock() - self.started
        return self.rows / elapsed if elapsed > 0 else 0.0
