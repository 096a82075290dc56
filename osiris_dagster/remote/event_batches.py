"""Store relayed events in the host instance in batches, keeping every effect of `handle_new_event`.

Why not ``handle_new_event`` per event: Dagster's SQL event log storages open a new connection
(sqlite: a new engine too) and commit for every event, which measured 140-290 events/s into
SQLite storage and 125-150 events/s into PostgreSQL storage on the development machine. And why
not Dagster's own batching (``DAGSTER_EVENT_BATCH_SIZE`` + ``store_event_batch``): the
PostgreSQL storage batches only runs of materializations or observations, the SQLite storage not
at all (``EventLogStorage.store_event_batch`` is a loop of ``store_event``).

What a stored event does besides its row in ``event_logs`` depends on its type, so events split
in two:

* **plain** events (step start/success/output, logs captured, engine events, user logs — the
  bulk of a run): their row is all there is. A run of consecutive plain events goes into the
  run's event log as ONE multi-row ``INSERT`` (one connection, one transaction), in order;
* **events with effects** (asset events and asset check events update the asset and check
  index tables; run-status events move the run's status and are mirrored in SQLite's index
  shard): through ``instance.handle_new_event`` one by one, exactly as Dagster stores them.

The order of storage ids is the relay order either way, because a pending batch is written
before any event with effects. A storage that is not a `SqlEventLogStorage` gets every event
through ``handle_new_event``. Measured with ``bench/launcher.py`` (README, Performance).

Deliberately not done: in-process subscribers (``instance.add_event_listener``) of a plain event
are not called — the supervisor has none; the UI and the daemon read storage.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import DagsterInstance
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

# Rows per INSERT: far below SQLite's bound on bound parameters (32,766; ~8 per row).
_ROWS_PER_INSERT = 500


def has_effects(entry: EventLogEntry) -> bool:
    """True if storing this event changes more than its own row (asset index, checks, run status)."""
    event = entry.dagster_event
    if event is None:
        return False
    return event.event_type in ASSET_EVENTS or event.event_type in ASSET_CHECK_EVENTS or event.is_job_event


class EventBatchWriter:
    def __init__(self, instance: DagsterInstance) -> None:
        self._instance = instance
        storage = instance.event_log_storage
        self._storage = storage if isinstance(storage, SqlEventLogStorage) else None

    def store(self, entries: Sequence[EventLogEntry]) -> None:
        """Store ``entries`` in order; returns when every one is committed."""
        plain: list[EventLogEntry] = []
        for entry in entries:
            if not self._instance.should_store_event(entry):
                continue
            if self._storage is not None and not has_effects(entry):
                plain.append(entry)
                continue
            self._insert(plain)
            plain = []
            self._instance.handle_new_event(entry)
        self._insert(plain)

    def _insert(self, entries: list[EventLogEntry]) -> None:
        if not entries:
            return
        storage = self._storage
        assert storage is not None
        by_run: dict[str, list[EventLogEntry]] = {}
        for entry in entries:  # one relay serves one run; keep it correct for mixed input anyway
            by_run.setdefault(entry.run_id, []).append(entry)
        for run_id, run_entries in by_run.items():
            with storage.run_connection(run_id) as connection:
                for start in range(0, len(run_entries), _ROWS_PER_INSERT):
                    connection.execute(
                        storage.prepare_insert_event_batch(run_entries[start : start + _ROWS_PER_INSERT])
                    )
