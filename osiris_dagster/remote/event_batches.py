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
  run's event log as ONE ``INSERT`` executed for many rows (one connection, one transaction), in
  order. Their row is built from the line's JSON (`PlainEvent`), never deserialized into Dagster
  objects and serialized again: that round trip alone cost ~370 µs per event, JSON ~30 µs;
* **events with effects** (asset events and asset check events update the asset and check
  index tables; run-status events move the run's status and are mirrored in SQLite's index
  shard): through ``instance.handle_new_event`` one by one, exactly as Dagster stores them.

Which events are plain is decided by type alone (`is_plain_type`), from the serialized event:
every type whose storing Dagster special-cases goes the slow, exact way.

The order of storage ids is the relay order either way, because a pending batch is written
before any event with effects. A storage that is not a `SqlEventLogStorage` gets every event
through ``handle_new_event``. Measured with ``bench/launcher.py`` (README, Performance).

Deliberately not done: in-process subscribers (``instance.add_event_listener``) of a plain event
are not called — the supervisor has none; the UI and the daemon read storage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from dagster import DagsterInstance, deserialize_value
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, PIPELINE_EVENTS, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

# Types whose storing does more than insert their row (asset index, checks, run status, wipes).
_EFFECT_TYPES = frozenset(
    t.value
    for t in (
        *ASSET_EVENTS,
        *ASSET_CHECK_EVENTS,
        *PIPELINE_EVENTS,
        DagsterEventType.ASSET_HEALTH_CHANGED,
        DagsterEventType.ASSET_WIPED,
    )
)


def is_plain_type(event_type_value: str | None) -> bool:
    return event_type_value not in _EFFECT_TYPES


@dataclass(frozen=True)
class PlainEvent:
    """A plain event as its ``event_logs`` row, straight from its serialized text."""

    run_id: str
    serialized: str
    event_type: str | None
    step_key: str | None
    timestamp: float

    @classmethod
    def parse(cls, serialized: str) -> PlainEvent | None:
        """The plain event, or None if this event has effects (then it is deserialized and stored by Dagster)."""
        data = json.loads(serialized)
        dagster_event = data.get("dagster_event")
        event_type = dagster_event.get("event_type_value") if dagster_event else None
        if not is_plain_type(event_type) or data.get("__class__") != "EventLogEntry":
            return None
        step_key = dagster_event.get("step_key") if dagster_event else data.get("step_key")
        return cls(data["run_id"], serialized, event_type, step_key, float(data["timestamp"]))

    def entry(self) -> EventLogEntry:
        return deserialize_value(self.serialized, EventLogEntry)


class EventBatchWriter:
    def __init__(self, instance: DagsterInstance) -> None:
        self._instance = instance
        storage = instance.event_log_storage
        self._storage = storage if isinstance(storage, SqlEventLogStorage) else None

    def store(self, items: Sequence[EventLogEntry | PlainEvent]) -> None:
        """Store ``items`` in order; returns when every one is committed."""
        plain: list[PlainEvent] = []
        for item in items:
            if isinstance(item, PlainEvent):
                if self._storage is not None:
                    plain.append(item)
                else:
                    self._instance.handle_new_event(item.entry())
                continue
            self._insert(plain)
            plain = []
            if self._instance.should_store_event(item):
                self._instance.handle_new_event(item)
        self._insert(plain)

    def _insert(self, events: list[PlainEvent]) -> None:
        if not events:
            return
        storage = self._storage
        assert storage is not None
        by_run: dict[str, list[dict[str, Any]]] = {}
        for event in events:  # one relay serves one run; keep it correct for mixed input anyway
            by_run.setdefault(event.run_id, []).append(
                {
                    "run_id": event.run_id,
                    "event": event.serialized,
                    "dagster_event_type": event.event_type,
                    "timestamp": storage._event_insert_timestamp(SimpleNamespace(timestamp=event.timestamp)),
                    "step_key": event.step_key,
                    "asset_key": None,
                    "partition": None,
                }
            )
        insert = SqlEventLogStorageTable.insert()
        for run_id, rows in by_run.items():
            with storage.run_connection(run_id) as connection:
                connection.execute(insert, rows)
