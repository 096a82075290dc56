"""The sandbox's event log: kept in memory, each event relayed the moment it is stored.

A sandboxed run's events belong to the host: the sandbox-local instance only has to hold them
for the run's own reads (Dagster reads its event log while executing: step outputs, asset
records) and hand each one to the relay. Storing them on disk cost a sqlite commit per event in
the sandbox (~5 ms on 2 cores) *plus* the relay's poll of ``get_records_for_run`` that found them
again; this storage keeps Dagster's own in-memory event log (the same SQL tables, in an
in-memory sqlite database) and, under one lock, stores the event and appends it to the durable,
sequence-numbered log (`relay_protocol.DurableLog`, which also prints it). So every event is
relayed exactly once, in storage-id order, and reaches the durable log before the next one is
stored: a worker killed mid-run leaves a log that holds every event stored up to its death.

Only for runs executed in ONE process (the in-process executor, the product's default): the
multiprocess executor's step processes each build their own instance from the run's instance
ref, and an in-memory log is not shared between processes — those runs keep the on-disk sqlite
log and the worker's poll (`worker.uses_relayed_event_log`).

Wired in through the sandbox instance's ``dagster.yaml`` (`dagster_yaml`); the durable log it
writes to is the worker's, set with `relay_to` before the run executes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from dagster._core.storage.event_log.in_memory import InMemoryEventLogStorage
from dagster._serdes import serialize_value

from osiris_dagster.remote import relay_protocol as protocol


class _Sink(Protocol):
    def emit_many(self, items: list[tuple[str, str]]) -> None: ...


_sink: _Sink | None = None


def relay_to(sink: _Sink | None) -> None:
    """Where every storage of this process relays the events it stores (the worker's durable log)."""
    global _sink
    _sink = sink


def dagster_yaml() -> str:
    """The sandbox instance's ``dagster.yaml`` that stores events with this module's storage."""
    return (
        "telemetry:\n  enabled: false\n"
        "event_log_storage:\n"
        f"  module: {__name__}\n"
        f"  class: {RelayedEventLogStorage.__name__}\n"
    )


class RelayedEventLogStorage(InMemoryEventLogStorage):
    """Dagster's in-memory event log that relays each stored event, once, in storage order."""

    def __init__(self, inst_data: Any = None, preload: Any = None) -> None:
        # Held across "store, then relay" so two threads storing at once cannot relay out of order.
        self._relay_lock = threading.RLock()
        super().__init__(inst_data, preload)

    def store_event(self, event: Any) -> None:
        with self._relay_lock:
            super().store_event(event)
            self._relay([event])

    def store_event_batch(self, events: Sequence[Any]) -> None:
        # One durable write for the batch: the batch is stored as a unit, and relayed as one.
        with self._relay_lock:
            for event in events:
                InMemoryEventLogStorage.store_event(self, event)
            self._relay(list(events))

    @staticmethod
    def _relay(events: list[Any]) -> None:
        if _sink is None:
            raise RuntimeError(
                "RelayedEventLogStorage stored an event with nowhere to relay it: "
                "the worker sets its durable log with relayed_event_log.relay_to() before the run starts"
            )
        _sink.emit_many([(protocol.EVENT, serialize_value(event)) for event in events])
