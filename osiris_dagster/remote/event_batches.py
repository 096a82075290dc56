"""Store relayed events in the host instance in batches, with exactly the effects of `handle_new_event`.

Why not ``handle_new_event`` per event: Dagster's SQL storages open a connection and commit for
every event, and an asset event costs two of each on SQLite (its run shard, then its mirror in
the index shard) — profiled at 35-66 ms per materialization on the development machine: two
fsyncs on commit, two WAL checkpoints when the last connection closes, a reflection of the
``asset_keys`` columns, an uncached statement compile. That is ~120 events/s once 1 event in 10
is a materialization. And why not Dagster's own batching (``DAGSTER_EVENT_BATCH_SIZE`` +
``store_event_batch``): SQLite's is a loop of ``store_event``; PostgreSQL's takes only runs of
one asset event type, in connections and transactions of its own, so a batch of a real run's
mixed events could be neither one transaction nor in relay order.

So a batch (what the relay coalesced: the stdout chunks of a burst, up to 1,000 events,
`EventRelay`) is written in as few transactions as there are databases, on connections kept open
for the writer's life (SQLite: one engine per database file; PostgreSQL: one small pool per URL
for the process, `_postgres_engine`) — Dagster's own engines connect, and on SQLite checkpoint the
WAL on close, for every statement:

* **PostgreSQL**: ONE transaction for everything — the ``event_logs`` rows in relay order (their
  ids taken from the table's sequence first: the ids key the asset and check tables), the
  ``asset_event_tags``, the ``asset_keys`` index, the ``asset_check_executions``, and the
  ``runs`` row of run-status events when run storage is the same database — as SQL text sent in
  two round trips besides BEGIN and COMMIT (`postgres_batch`, `_write_postgres`). A batch is
  all-or-nothing; a relay that dies mid-batch stores it again from its cursor.
* **SQLite** (a shard per run, the ``index`` shard, ``runs.db``): the index shard's transaction
  first (mirror rows of asset, check and run-status events, tags, ``asset_keys``, check
  executions — what Dagster's SQLite storage puts there), then the run shard's rows, then
  ``runs.db`` (run-status effects), each under ``BEGIN IMMEDIATE`` so concurrent relays wait on
  the lock instead of failing with "database is locked". The run row goes last, as in Dagster's
  ``handle_new_event``: a reader that sees a run SUCCESS finds its RUN_SUCCESS event. A relay
  killed between two commits has not advanced its cursor: killed before the run shard's commit,
  it stores the batch again, and the index part skips the events whose mirror row (same run, same
  serialized event) is already there; killed after it, its successor finds the events in the run
  shard (`EventRelay.reconcile` treats them as stored) and applies their run-row effects again
  (`EventBatchWriter.restore_run_effects`) — a run-status update applied again leaves the same
  row, its values come from the event.

Row contents are Dagster's own, with every event's text taken as it came (the worker serialized it
with the same Dagster version, and serializing is deterministic): for **plain** events (step,
output, log, engine events — the bulk of a run, whose row is all there is) the columns are built
from the line's JSON (`PlainEvent`), skipping a deserialize/serialize round trip that alone cost
~370 µs per event; so are asset materializations, observations and planned materializations,
whose effects need only their asset key, partition and tags (`EffectEvent`); the other events with
effects are deserialized (their effects need their objects). None is serialized again — Dagster
serializes a materialization twice (its row and the ``last_materialization`` record, here the text
in the record's envelope, `_record_text`), a check evaluation twice: 0.9 of the 4.4 s that 30 demo
runs took before. Effects follow Dagster 1.13's
``store_event`` of each storage: tags through Dagster's ``_store_asset_event_tags``, the values of
``asset_keys`` as ``_get_asset_entry_values`` makes them, the check execution rows as
``store_asset_check_event`` writes them, the run row as run storage's ``handle_run_event``
updates it (`_RunRowChange`: status, body, start/end time, update time, failure-reason tag)
— written here only because Dagster's functions open connections of their own, outside the
batch's transaction. Written in as few statements as the rows allow (SQLite: with Dagster's
SQLAlchemy table objects; PostgreSQL: as SQL text on the same tables, `postgres_batch`):
``asset_keys`` gets one multi-row upsert per run of asset keys (in key order) that set the same
columns, with the values of the batch's events merged in relay order (the row an event-by-event
upsert would leave) — in key order so that two relays' transactions never lock the same keys in
opposite orders (a deadlock on PostgreSQL); a run's row is read once and written once per batch,
however many of its run events the batch holds; on PostgreSQL a run of check evaluations is one
statement (`_store_check_evaluations_postgres`). Schema facts (tables, index columns, check
support, the events' id sequence) are looked up once per storage object, not per run
(`_SCHEMA_FACTS`: on PostgreSQL each costs Dagster a connection).

Through ``handle_new_event``, one by one, after everything before them is committed: a
RUN_FAILURE when run retries are enabled (Dagster then decides the retry and tags the run), run
events whose run storage is not the event storage's kind/database, and every event of a storage
that is neither SQLite's nor PostgreSQL's (plain events are still batched for any
`SqlEventLogStorage`). The relay hands the run's terminal event over alone, after the result
archive is in place (`EventRelay.release_held`).

Deliberately not done: in-process subscribers (``instance.add_event_listener``) of batched events
are not called — the supervisor has none; the UI and the daemon read storage.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import Any, TypeVar

import sqlalchemy as db
from dagster import AssetKey, DagsterInstance, deserialize_value, serialize_value
from dagster._core.event_api import EventLogRecord
from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    PIPELINE_EVENTS,
    DagsterEvent,
    DagsterEventType,
    JobFailureData,
    RunFailureReason,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.storage.event_log.migration import ASSET_KEY_INDEX_COLS
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    AssetEventTagsTable,
    AssetKeyTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG
from dagster._time import datetime_from_timestamp
from dagster._utils.merger import merge_dicts
from sqlalchemy.dialects import sqlite

from osiris_dagster.remote.postgres_batch import PostgresBatch, id_sequence

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
        event = parse_event(serialized)
        return event if isinstance(event, PlainEvent) else None

    def entry(self) -> EventLogEntry:
        return deserialize_value(self.serialized, EventLogEntry)


@dataclass(frozen=True)
class EffectEvent:
    """An event with effects: what its row and its effects need, and the text it came as.

    The text is its ``event_logs.event`` column and what the asset and check tables keep of it
    (``last_materialization``, ``evaluation_event``). The worker serialized the event with the same
    Dagster version and serializing is deterministic (fields in declared order, sets sorted), so
    ``serialize_value(entry)`` gives this text back — at ~0.5 ms per materialization of the demo
    run, and Dagster serializes a materialization twice, a check evaluation twice.

    Materializations, observations and planned materializations — 20 of the demo run's 32 events
    with effects — need only their asset key, partition and tags besides the row's columns: those
    are read off the event's JSON (`_asset_facts`), and the event is deserialized only if something
    asks for its `entry` (a storage the writer hands to ``handle_new_event``). Deserializing them
    with Dagster's serdes (metadata entries are objects checked field by field) was most of the
    ~10 ms of CPU a demo run spent deserializing. Every other event with effects — checks,
    run-status events, wipes — is deserialized here, as its effects read its objects.
    """

    serialized: str
    event_type: DagsterEventType | None
    run_id: str
    timestamp: float
    step_key: str | None
    asset_key: str | None  # ``AssetKey.to_string()``, Dagster's column value
    partition: str | None
    asset_tags: Mapping[str, str]  # the materialization's or observation's own tags, as Dagster reads them

    @classmethod
    def parse(cls, serialized: str) -> EffectEvent:
        event = parse_event(serialized)
        return event if isinstance(event, EffectEvent) else cls.of(event.entry(), serialized)

    @classmethod
    def of(cls, entry: EventLogEntry, serialized: str | None = None) -> EffectEvent:
        """From the deserialized event (with its text, if at hand: serializing it is the slow part)."""
        event = entry.dagster_event
        asset_key = event.asset_key if event else None
        tags: Mapping[str, str] = {}
        if event is not None and asset_key is not None:  # as Dagster's ``_tags_for_asset_event``
            if event.is_step_materialization:
                tags = event.step_materialization_data.materialization.tags or {}
            elif event.is_asset_observation:
                tags = event.asset_observation_data.asset_observation.tags
        effect = cls(
            serialized if serialized is not None else serialize_value(entry),
            event.event_type if event else None,
            entry.run_id,
            entry.timestamp,
            event.step_key if event else entry.step_key,
            asset_key.to_string() if asset_key else None,
            event.partition if event else None,
            tags,
        )
        effect.__dict__["entry"] = entry
        return effect

    @cached_property
    def entry(self) -> EventLogEntry:
        return deserialize_value(self.serialized, EventLogEntry)


def parse_event(serialized: str) -> PlainEvent | EffectEvent:
    """A serialized `EventLogEntry` as the writer stores it: the JSON is parsed once for both kinds."""
    data = json.loads(serialized)
    dagster_event = data.get("dagster_event")
    event_type = dagster_event.get("event_type_value") if dagster_event else None
    if data.get("__class__") == "EventLogEntry" and is_plain_type(event_type):
        step_key = dagster_event.get("step_key") if dagster_event else data.get("step_key")
        return PlainEvent(data["run_id"], serialized, event_type, step_key, float(data["timestamp"]))
    facts = _asset_facts(data)
    if facts is None:
        return EffectEvent.of(deserialize_value(serialized, EventLogEntry), serialized)
    asset_key, partition, tags = facts
    return EffectEvent(
        serialized,
        DagsterEventType(event_type),
        data["run_id"],
        float(data["timestamp"]),
        dagster_event.get("step_key"),
        asset_key,
        partition,
        tags,
    )


# Where an asset event's data keeps its asset key, partition and tags, by event type:
# (class of the event's data, its field holding the asset's object or None, that object's class,
# whether the event's tags count: Dagster's ``_tags_for_asset_event`` reads only these two's).
_ASSET_SHAPES = {
    DagsterEventType.ASSET_MATERIALIZATION.value: (
        "StepMaterializationData",
        "materialization",
        "AssetMaterialization",
        True,
    ),
    DagsterEventType.ASSET_OBSERVATION.value: ("AssetObservationData", "asset_observation", "AssetObservation", True),
    DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value: ("AssetMaterializationPlannedData", None, None, False),
}


def _asset_facts(data: dict[str, Any]) -> tuple[str, str | None, Mapping[str, str]] | None:
    """(asset key string, partition, tags) of an asset event, read off its JSON; None for any
    other event, or one whose JSON is not exactly of the shape Dagster 1.13 serializes (then it is
    deserialized: a shape this misreads would store something else than Dagster)."""
    event = data.get("dagster_event")
    if (
        data.get("__class__") != "EventLogEntry"
        or not isinstance(event, dict)
        or event.get("__class__") != "DagsterEvent"
    ):
        return None
    shape = _ASSET_SHAPES.get(event.get("event_type_value"))
    if shape is None:
        return None
    data_class, field, asset_class, with_tags = shape
    specific = event.get("event_specific_data")
    if not isinstance(specific, dict) or specific.get("__class__") != data_class:
        return None
    holder = specific if field is None else specific.get(field)
    if not isinstance(holder, dict) or (asset_class is not None and holder.get("__class__") != asset_class):
        return None
    key, partition = holder.get("asset_key"), holder.get("partition")
    path = key.get("path") if isinstance(key, dict) and key.get("__class__") == "AssetKey" else None
    if not isinstance(path, list) or not all(isinstance(part, str) for part in path):
        return None
    if partition is not None and not isinstance(partition, str):
        return None
    tags = holder.get("tags") if with_tags else {}
    if with_tags and tags is None and asset_class == "AssetMaterialization":
        tags = {}  # Dagster: ``materialization.tags or {}``
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        return None
    return AssetKey(path).to_string(), partition, tags


Item = EventLogEntry | PlainEvent | EffectEvent
_Fact = TypeVar("_Fact")


def _is_asset_event(item: EffectEvent) -> bool:
    return item.event_type in ASSET_EVENTS and item.asset_key is not None


def _asset_events_with_ids(
    items: Sequence[PlainEvent | EffectEvent], ids: Sequence[Any]
) -> list[tuple[EffectEvent, Any]]:
    """The batch's asset events, each with the storage id its row took (both storages' effects)."""
    return [
        (item, event_id)
        for item, event_id in zip(items, ids, strict=True)
        if isinstance(item, EffectEvent) and _is_asset_event(item)
    ]


def _is_check_event(item: EffectEvent) -> bool:
    return item.event_type in ASSET_CHECK_EVENTS


def _is_run_event(item: EffectEvent) -> bool:
    return item.event_type in EVENT_TYPE_TO_PIPELINE_RUN_STATUS


class EventBatchWriter:
    """Stores batches of one host instance's events; keeps its database connections for its life."""

    def __init__(self, instance: DagsterInstance) -> None:
        self._instance = instance
        storage = instance.event_log_storage
        self._storage = storage if isinstance(storage, SqlEventLogStorage) else None
        self._sqlite = storage if isinstance(storage, SqliteEventLogStorage) else None
        self._postgres = self._storage is not None and self._storage.__class__.__name__ == "PostgresEventLogStorage"
        self._run_events = _RunEvents(instance, self._sqlite is not None, self._postgres)
        self._engines: dict[str, db.Engine] = {}
        # Engines hold pooled connections; dispose of them when the writer goes, whoever forgets `close`.
        self._finalizer = weakref.finalize(self, _dispose_all, self._engines)
        # Shared by every writer of this storage: a relay (and its writer) lives for one run, and
        # on PostgreSQL each fact costs Dagster a connection of its own (~20 ms a run otherwise).
        self._lookups = _SCHEMA_FACTS.setdefault(storage, {})

    def close(self) -> None:
        """Close the kept connections (also done when the writer is garbage collected)."""
        self._finalizer()

    def store(self, items: Sequence[Item]) -> None:
        """Store ``items`` in order; returns when every one is committed."""
        pending: list[PlainEvent | EffectEvent] = []
        for item in items:
            if isinstance(item, PlainEvent):
                pending.append(item)
                continue
            if isinstance(item, EffectEvent):
                if self._batches(item.event_type, lambda item=item: item.entry):  # type: ignore[misc]
                    pending.append(item)
                    continue
                entry = item.entry
            else:
                entry = item
                if self._batches(entry.dagster_event_type, lambda entry=entry: entry):  # type: ignore[misc]
                    pending.append(EffectEvent.of(entry))
                    continue
            self._write(pending)
            pending = []
            self._instance.handle_new_event(entry)
        self._write(pending)

    def _batches(self, event_type: DagsterEventType | None, entry: Callable[[], EventLogEntry]) -> bool:
        """Whether this writer stores the event itself (else: ``handle_new_event``); only a
        run-status event's own data is looked at (``entry``: the deserialized event)."""
        if self._sqlite is None and not self._postgres:
            return False
        return event_type not in PIPELINE_EVENTS or self._run_events.batches(entry().get_dagster_event())

    def _stores(self, item: EffectEvent) -> bool:
        """``DagsterInstance.should_store_event`` (1.13): it refuses only asset-failure events, on a
        storage that cannot store them; only those are deserialized to ask it."""
        return item.event_type != DagsterEventType.ASSET_FAILED_TO_MATERIALIZE or self._instance.should_store_event(
            item.entry
        )

    def _write(self, items: list[PlainEvent | EffectEvent]) -> None:
        storage = self._storage
        if not items:
            return
        if storage is None:
            for item in items:
                self._instance.handle_new_event(item.entry() if isinstance(item, PlainEvent) else item.entry)
            return
        kept = [item for item in items if isinstance(item, PlainEvent) or self._stores(item)]
        rows = [self._row(item) for item in kept]
        run_events = [item.entry for item in kept if isinstance(item, EffectEvent) and _is_run_event(item)]
        if self._postgres:
            self._write_postgres(kept, rows, run_events)
            return
        if self._sqlite is not None:
            self._store_index_shard(kept, rows)
        by_run: dict[str, list[dict[str, Any]]] = {}
        for row in rows:  # one relay serves one run; keep it correct for mixed input anyway
            by_run.setdefault(row["run_id"], []).append(row)
        for run_id, run_rows in by_run.items():
            # Another SQL storage (MySQL's): plain events only, on Dagster's own connection.
            shard = self._run_shard(run_id) if self._sqlite is not None else storage.run_connection(run_id)
            with shard as connection:
                connection.execute(SqlEventLogStorageTable.insert(), run_rows)
        if self._sqlite is not None and run_events:
            # After the run shard's rows, as Dagster orders them (``store_event``, then
            # ``handle_run_event``): a run never reads SUCCESS without its RUN_SUCCESS event.
            self._apply_run_row_effects(run_events)

    def _write_postgres(
        self, items: list[PlainEvent | EffectEvent], rows: list[dict[str, Any]], run_events: list[EventLogEntry]
    ) -> None:
        """The batch in one transaction, its statements sent in as few round trips as their answers
        allow (`postgres_batch`): the events' ids, the lock and the run rows in one, the rest in one."""
        if not items:
            return
        storage = self._storage
        assert storage is not None
        assets = [item for item in items if isinstance(item, EffectEvent) and _is_asset_event(item)]
        numbered = bool(assets) or any(isinstance(item, EffectEvent) and _is_check_event(item) for item in items)
        with self._postgres_engine().begin() as connection:
            sequence = self._lookup("event id sequence", lambda: id_sequence(connection, SqlEventLogStorageTable))
            batch = PostgresBatch(connection, sequence)
            run_rows = batch.claim(
                rows if numbered else [],
                lock_keys=sorted({item.asset_key for item in assets if item.asset_key is not None}),
                run_ids=self._run_events.unread(sorted({entry.run_id for entry in run_events})),
            )
            batch.insert(SqlEventLogStorageTable, rows)
            ids = [row.get("id") for row in rows]
            asset_ids = _asset_events_with_ids(items, ids)
            if asset_ids:
                tags = _tag_rows(storage, asset_ids)
                if tags and self._lookup("tags table", lambda: storage.has_table(AssetEventTagsTable.name)):
                    batch.insert(AssetEventTagsTable, tags)
                has_index_cols = self._lookup("index cols", lambda: storage.has_secondary_index(ASSET_KEY_INDEX_COLS))
                for columns, key_rows in _asset_key_upserts(asset_ids, has_index_cols, with_empty=True):
                    batch.upsert(AssetKeyTable, key_rows, key="asset_key", update=columns)
            written = self._run_events.apply_postgres(batch, run_events, run_rows, self._lookup) if run_events else {}
            for planned, evaluations in self._check_steps(items, ids):
                batch.insert(AssetCheckExecutionsTable, planned)
                if evaluations:
                    self._store_check_evaluations_postgres(batch, evaluations)
            batch.send()
        self._run_events.remember(written)

    def _store_check_evaluations_postgres(
        self, batch: PostgresBatch, evaluations: list[tuple[EffectEvent, int]]
    ) -> None:
        """Consecutive ASSET_CHECK_EVALUATIONs as ``store_asset_check_event`` stores them one by one:
        each updates its check's planned row (refusing more than one) or is inserted.

        One statement for a run of them (`PostgresBatch.update_else_insert`; the demo run's five
        evaluations were five round trips once). An evaluation of a check already evaluated in the
        run of them starts a new statement: it must see the first one's row.
        """
        storage = self._storage
        assert storage is not None
        groups: list[list[tuple[EffectEvent, bool, dict[str, Any]]]] = [[]]
        identities: set[tuple[Any, ...]] = set()
        for item, event_id in evaluations:
            try_update, row = _check_evaluation_row(storage, item, event_id)
            identity = (row["asset_key"], row["check_name"], row["run_id"], row["partition"])
            if identity in identities:
                groups.append([])
                identities.clear()
            identities.add(identity)
            groups[-1].append((item, try_update, row))
        for group in groups:
            if not group:
                continue
            updated = batch.update_else_insert(
                AssetCheckExecutionsTable,
                [row for _, _, row in group],
                identity=("asset_key", "check_name", "run_id"),
                null_safe=("partition",),
                try_update=[try_update for _, try_update, _ in group],
            )
            for position, count in sorted(updated.items()):
                evaluation = group[position][0].entry.get_dagster_event().event_specific_data
                raise RuntimeError(
                    f"Updated {count} rows for asset check evaluation {evaluation.asset_check_key} "  # type: ignore[union-attr]
                    "as a result of duplicate AssetCheckPlanned events."
                )

    def _apply_run_row_effects(self, run_events: list[EventLogEntry]) -> None:
        with self._shared_engine("runs", self._run_events.new_sqlite_engine).begin() as connection:
            self._run_events.apply(connection, run_events, self._lookup)

    def restore_run_effects(self, stored: Sequence[EventLogEntry]) -> None:
        """Apply the run-row effects of run events that are stored already, again.

        For a relay killed after a batch's events were committed and before its run row was
        (SQLite: two databases; Dagster's own ``handle_new_event`` has the same window): its
        successor finds the events stored (`EventRelay.reconcile`) and calls this. Applying a run
        event again leaves the row it left (its values come from the event). PostgreSQL's batch is
        one transaction: its run rows are there whenever its events are.
        """
        run_events = [entry for entry in stored if entry.dagster_event_type in EVENT_TYPE_TO_PIPELINE_RUN_STATUS]
        if not run_events:
            return
        batched = [entry for entry in run_events if self._batches(entry.dagster_event_type, lambda entry=entry: entry)]  # type: ignore[misc]
        if self._postgres and len(batched) == len(run_events):
            return
        if self._sqlite is not None and len(batched) == len(run_events):
            self._apply_run_row_effects(run_events)
            return
        for entry in run_events:
            self._instance.run_storage.handle_run_event(
                entry.run_id, entry.get_dagster_event(), datetime_from_timestamp(entry.timestamp)
            )

    def _row(self, item: PlainEvent | EffectEvent) -> dict[str, Any]:
        """The ``event_logs`` row, as Dagster's ``_event_to_row`` makes it, with the text already in hand."""
        storage = self._storage
        assert storage is not None
        if isinstance(item, EffectEvent):
            return {
                "run_id": item.run_id,
                "event": item.serialized,
                "dagster_event_type": item.event_type.value if item.event_type else None,
                "timestamp": storage._event_insert_timestamp(item),
                "step_key": item.step_key,
                "asset_key": item.asset_key,
                "partition": item.partition or None,
            }
        return {
            "run_id": item.run_id,
            "event": item.serialized,
            "dagster_event_type": item.event_type,
            "timestamp": storage._event_insert_timestamp(SimpleNamespace(timestamp=item.timestamp)),
            "step_key": item.step_key,
            "asset_key": None,
            "partition": None,
        }

    # -- connections, kept for the writer's life ------------------------------------------------
    def _engine(self, name: str, create: Callable[[], db.Engine]) -> db.Engine:
        if name not in self._engines:
            self._engines[name] = create()
        return self._engines[name]

    def _shared_engine(self, name: str, create: Callable[[], db.Engine]) -> db.Engine:
        """An engine of a database every run writes to (SQLite's index shard, ``runs.db``), shared by
        every writer of this storage and disposed of with the storage.

        A writer lives for one run; with engines of its own, every run paid their connects and, when
        it closed them, SQLite's checkpoint of each WAL on its last connection's close: 2 x ~2 ms
        a run idle, ~6 ms loaded — a tenth of the demo run's relaying.
        """
        with _SHARED_SQLITE_LOCK:
            engines = _SHARED_SQLITE.get(self._storage)
            if engines is None:
                engines = _SHARED_SQLITE[self._storage] = {}
                weakref.finalize(self._storage, _dispose_all, engines)
            if name not in engines:
                engines[name] = create()
            return engines[name]

    def _lookup(self, name: str, look_up: Callable[[], _Fact]) -> _Fact:
        """A schema fact (has this table, this index, the events' id sequence): looked up once per
        storage, not per batch.

        Like Dagster's own caches of such facts, for the process's life: a schema migrated under a
        running supervisor is seen by its next process.
        """
        if name not in self._lookups:
            self._lookups[name] = look_up()
        return self._lookups[name]  # type: ignore[no-any-return]

    def _postgres_engine(self) -> db.Engine:
        storage = self._storage
        return _postgres_engine(storage.postgres_url, getattr(storage, "_token_provider", None))  # type: ignore[union-attr]

    @contextmanager
    def _run_shard(self, run_id: str) -> Iterator[db.Connection]:
        """A transaction on SQLite's shard of ``run_id``.

        The shard normally exists: ``launch_run`` stored the run's first events on the host. Only
        if it has no ``event_logs`` table yet is Dagster asked to create it: Dagster's own first
        connection to a shard checks its alembic revision, ~0.1-0.6 s, once per process and run.
        """
        assert self._sqlite is not None
        name = f"shard:{run_id}"
        if name not in self._engines:
            shards = [key for key in self._engines if key.startswith("shard:")]
            if len(shards) >= _MAX_SHARDS:  # a writer fed many runs keeps only the newest shards open
                self._engines.pop(shards[0]).dispose()
            engine = self._engine(name, lambda: _sqlite_engine(self._sqlite.conn_string_for_shard(run_id)))  # type: ignore[union-attr]
            with engine.connect() as connection:
                created = db.inspect(connection).has_table(SqlEventLogStorageTable.name)
            if not created:
                with self._sqlite.run_connection(run_id):
                    pass  # Dagster creates the shard's tables (and WAL mode) on its first connection
        with self._engines[name].begin() as connection:
            yield connection

    # -- SQLite's index shard ----------------------------------------------------------------
    def _store_index_shard(self, items: list[PlainEvent | EffectEvent], rows: list[dict[str, Any]]) -> None:
        """Mirror asset, check and run-status events in the index shard (as Dagster's SQLite storage
        does), with their effects, unless already there."""
        mirrored = [
            (item, row)
            for item, row in zip(items, rows, strict=True)
            if isinstance(item, EffectEvent) and (_is_asset_event(item) or _is_check_event(item) or _is_run_event(item))
        ]
        if not mirrored:
            return
        assert self._sqlite is not None
        engine = self._shared_engine(
            "index",
            lambda: _sqlite_engine(self._sqlite.conn_string_for_shard(INDEX_SHARD_NAME)),  # type: ignore[union-attr]
        )
        with engine.begin() as connection:
            present = _stored_texts(
                connection, {row["run_id"] for _, row in mirrored}, [row["event"] for _, row in mirrored]
            )
            todo = [(item, row) for item, row in mirrored if row["event"] not in present]
            entries = [item for item, _ in todo]
            ids = _insert(connection, [row for _, row in todo])
            self._store_effects(connection, entries, ids)

    # -- effects (SQLite's; PostgreSQL's are `_write_postgres`) ------------------------------------
    def _store_effects(
        self, connection: db.Connection, items: Sequence[PlainEvent | EffectEvent], ids: Sequence[int]
    ) -> None:
        storage = self._storage
        assert storage is not None
        assets = _asset_events_with_ids(items, ids)
        if assets:
            tags = _tag_rows(storage, assets)
            if tags and self._lookup("tags table", lambda: storage.has_table(AssetEventTagsTable.name)):
                connection.execute(AssetEventTagsTable.insert(), tags)
            has_index_cols = self._lookup(
                "index cols", lambda: storage._has_asset_key_index_cols_on_connection(connection)
            )
            for columns, rows in _asset_key_upserts(assets, has_index_cols, with_empty=False):
                upsert = sqlite.insert(AssetKeyTable).values(rows)
                connection.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[AssetKeyTable.c.asset_key],
                        set_={column: upsert.excluded[column] for column in columns},
                    )
                )
        for planned, evaluations in self._check_steps(items, ids):
            if planned:
                connection.execute(AssetCheckExecutionsTable.insert(), planned)
            for item, event_id in evaluations:
                _store_check_evaluation(storage, connection, item, event_id)

    def _check_steps(
        self, items: Sequence[PlainEvent | EffectEvent], ids: Sequence[int | None]
    ) -> list[tuple[list[dict[str, Any]], list[tuple[EffectEvent, int]]]]:
        """The batch's check events as steps, in event order: (planned rows, []) for a run of
        ASSET_CHECK_EVALUATION_PLANNED — one insert, the rows in event order, so ids in the order
        Dagster's inserts would give them (a run plans all its checks at its start) — and ([],
        evaluations) for a run of ASSET_CHECK_EVALUATIONs."""
        storage = self._storage
        assert storage is not None
        steps: list[tuple[list[dict[str, Any]], list[tuple[EffectEvent, int]]]] = []
        planning = False  # the kind of the last step
        for item, event_id in zip(items, ids, strict=True):
            if not (isinstance(item, EffectEvent) and _is_check_event(item)):
                continue
            if not self._lookup("checks", lambda: storage.supports_asset_checks):
                raise RuntimeError("Asset checks require a database schema migration. Run `dagster instance migrate`.")
            assert event_id is not None
            planned = item.event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
            if not steps or planning != planned:
                steps.append(([], []))
                planning = planned
            if planned:
                steps[-1][0].extend(_planned_check_rows(storage, item, event_id))
            else:
                steps[-1][1].append((item, event_id))
        return steps


def _tag_rows(storage: SqlEventLogStorage, assets: list[tuple[EffectEvent, int | None]]) -> list[dict[str, Any]]:
    """The ``asset_event_tags`` rows of ``_store_asset_event_tags`` (1.13): the event's own tags
    that Dagster indexes (``_tags_for_asset_event``). The table's existence is the caller's lookup."""
    return [
        dict(
            event_id=event_id,
            asset_key=item.asset_key,
            key=key,
            value=value,
            event_timestamp=storage._event_insert_timestamp(item),
        )
        for item, event_id in assets
        for key, value in _indexed_tags(storage, item).items()
    ]


def _asset_key_upserts(
    assets: list[tuple[EffectEvent, int | None]], has_index_cols: bool, *, with_empty: bool
) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """The batch's ``asset_keys`` writes: (columns set on conflict, rows), in key order.

    The values of the batch's events are merged per key in relay order (the row an event-by-event
    upsert would leave). One multi-row upsert per run of keys (in key order) that set the same
    columns: a batch's keys set one to three column sets (materialized, planned, observed), so a
    batch costs a statement or three instead of one per key, and the keys are still locked in key
    order — two relays' transactions never lock the same keys in opposite orders (a deadlock on
    PostgreSQL). ``with_empty``: a key whose events set nothing still gets its row (PostgreSQL's
    storage; SQLite's leaves ``asset_keys`` alone then).
    """
    merged: dict[str, dict[str, Any]] = {}
    for item, event_id in assets:
        key = item.asset_key
        assert key is not None and event_id is not None
        merged.setdefault(key, {}).update(_asset_entry_values(item, event_id, has_index_cols))
    runs: list[tuple[tuple[str, ...], list[dict[str, Any]]]] = []
    for key in sorted(merged):
        values = merged[key]
        columns = tuple(sorted(values))
        if not values and not with_empty:
            continue
        if not runs or runs[-1][0] != columns:
            runs.append((columns, []))
        runs[-1][1].append(dict(asset_key=key, **values))
    return runs


class _RunEvents:
    """The run-status effects of run events (RUN_START, RUN_SUCCESS, ...), on the batch's connection.

    ``handle_new_event`` stores the event, then calls run storage's ``handle_run_event``: status,
    run body, start/end time, update time, the failure-reason tag. That is reproduced here where
    run storage shares the batch's database (PostgreSQL: the same transaction, `apply_postgres`)
    or is SQLite's ``runs.db`` (its own transaction, with a connection kept open, `apply`). Anything else,
    and a RUN_FAILURE when run retries are on (Dagster then also decides and tags the retry),
    goes through ``handle_new_event``.
    """

    def __init__(self, instance: DagsterInstance, sqlite_events: bool, postgres_events: bool) -> None:
        self._instance = instance
        run_storage = instance.run_storage
        if sqlite_events and isinstance(run_storage, SqliteRunStorage):
            self._supported = True
        elif postgres_events and run_storage.__class__.__name__ == "PostgresRunStorage":
            event_url = getattr(instance.event_log_storage, "postgres_url", None)
            self._supported = event_url is not None and getattr(run_storage, "postgres_url", None) == event_url
        else:
            self._supported = False
        self._run_storage = run_storage
        # PostgreSQL: {run_id: (run_body, status)} of the runs' rows as this writer last committed them.
        self._written: dict[str, tuple[str, str]] = {}

    def batches(self, event: DagsterEvent) -> bool:
        if self._run_storage is None or not self._supported:
            return False
        return not (event.is_run_failure and self._instance.run_retries_enabled)

    def new_sqlite_engine(self) -> db.Engine:
        return _sqlite_engine(self._run_storage._conn_string)  # type: ignore[attr-defined]

    def apply(
        self, connection: db.Connection, entries: list[EventLogEntry], lookup: Callable[[str, Callable[[], bool]], bool]
    ) -> None:
        has_stats_cols = lookup("run stats cols", self._run_storage.has_run_stats_index_cols)  # type: ignore[attr-defined]
        by_run: dict[str, list[EventLogEntry]] = {}
        for entry in entries:
            by_run.setdefault(entry.run_id, []).append(entry)
        for run_id in sorted(by_run):  # in run id order: two relays' transactions lock runs in one order
            row = connection.execute(
                db.select(RunsTable.c.run_body, RunsTable.c.status).where(RunsTable.c.run_id == run_id)
            ).first()
            if row is None:
                continue
            change = _RunRowChange.of(row.run_body, row.status, by_run[run_id], has_stats_cols)
            if change.failure_reason is not None:
                if change.had_reason_tag:
                    connection.execute(
                        RunTagsTable.update()
                        .where(RunTagsTable.c.run_id == run_id, RunTagsTable.c.key == RUN_FAILURE_REASON_TAG)
                        .values(value=change.failure_reason)
                    )
                else:
                    connection.execute(
                        RunTagsTable.insert().values(
                            run_id=run_id, key=RUN_FAILURE_REASON_TAG, value=change.failure_reason
                        )
                    )
            connection.execute(RunsTable.update().where(RunsTable.c.run_id == run_id).values(**change.values))

    def unread(self, run_ids: Sequence[str]) -> list[str]:
        """Of ``run_ids``, the runs whose row a PostgreSQL batch must read (`apply_postgres`)."""
        return [run_id for run_id in run_ids if run_id not in self._written]

    def apply_postgres(
        self,
        batch: PostgresBatch,
        entries: list[EventLogEntry],
        rows: Mapping[str, tuple[str, str]],
        lookup: Callable[[str, Callable[[], bool]], bool],
    ) -> dict[str, tuple[str, str]]:
        """`apply` in a PostgreSQL batch, from the run rows read with its ids (`PostgresBatch.claim`)
        or, for a run whose row this writer wrote last, from what it wrote.

        The second is the held terminal event's batch: a round trip to read back the row its
        run's previous batch wrote. Its update is conditional (`PostgresBatch.update_if`): it
        applies only if the row still holds the status and body written then, so it writes what
        Dagster's read-and-update would; a row that changed since (tags added, a cancellation) is
        read and updated as any. Returns the rows as written ``{run_id: (run_body, status)}``, for
        `remember` once the batch is committed.
        """
        has_stats_cols = lookup("run stats cols", self._run_storage.has_run_stats_index_cols)  # type: ignore[attr-defined]
        by_run: dict[str, list[EventLogEntry]] = {}
        for entry in entries:
            by_run.setdefault(entry.run_id, []).append(entry)
        written: dict[str, tuple[str, str]] = {}
        for run_id in sorted(by_run):  # in run id order: two relays' transactions lock runs in one order
            events = by_run[run_id]
            change = None
            if run_id not in rows and run_id in self._written:
                body, status = self._written[run_id]
                change = _RunRowChange.of(body, status, events, has_stats_cols)
                expected = {"status": status, "run_body": body}
                if not batch.update_if(RunsTable, {"run_id": run_id}, expected, change.values):
                    change = None
                    rows = {**rows, **batch.claim([], lock_keys=[], run_ids=[run_id])}
            if change is None:
                if run_id not in rows:
                    continue  # no such run
                change = _RunRowChange.of(*rows[run_id], events, has_stats_cols)
                batch.update(RunsTable, {"run_id": run_id}, change.values)
            if change.failure_reason is not None:
                tag = {"run_id": run_id, "key": RUN_FAILURE_REASON_TAG}
                if change.had_reason_tag:
                    batch.update(RunTagsTable, tag, {"value": change.failure_reason})
                else:
                    batch.insert(RunTagsTable, [{**tag, "value": change.failure_reason}])
            written[run_id] = (change.values["run_body"], change.values["status"])
        return written

    def remember(self, written: Mapping[str, tuple[str, str]]) -> None:
        """The rows of `apply_postgres`, committed: the next batch of these runs need not read them."""
        self._written.update(written)


@dataclass(frozen=True)
class _RunRowChange:
    """What ``SqlRunStorage.handle_run_event`` (1.13) writes for a batch's run events of one run,
    in order: the row read once and written once, as the last of them leaves it.

    Each event's update sets status, body and update time from the event, and start/end time for
    start and ending events; so the row after the last update is the first event's read folded
    through every event, whichever times were set by any of them (the later winning).
    """

    values: dict[str, Any]  # of the ``runs`` row
    failure_reason: str | None  # the run's failure-reason tag, if an event sets it
    had_reason_tag: bool

    @classmethod
    def of(cls, run_body: str, status: str, entries: list[EventLogEntry], has_stats_cols: bool) -> _RunRowChange:
        # As Dagster's `_row_to_run`: the status column is more trustworthy than the body's.
        run = deserialize_value(run_body, DagsterRun).with_status(DagsterRunStatus(status))
        had_reason_tag = RUN_FAILURE_REASON_TAG in run.tags
        failure_reason: str | None = None
        values: dict[str, Any] = {}
        for entry in entries:
            event = entry.get_dagster_event()
            new_status = EVENT_TYPE_TO_PIPELINE_RUN_STATUS[event.event_type]
            updated = run.with_status(new_status)
            data = event.event_specific_data
            if (
                event.event_type == DagsterEventType.PIPELINE_FAILURE
                and isinstance(data, JobFailureData)
                and data.failure_reason
                and data.failure_reason != RunFailureReason.UNKNOWN
            ):
                failure_reason = data.failure_reason.value
                updated = updated.with_tags(merge_dicts(run.tags, {RUN_FAILURE_REASON_TAG: failure_reason}))
            update_timestamp = datetime_from_timestamp(entry.timestamp)
            values.update(status=new_status.value, update_timestamp=update_timestamp)
            if has_stats_cols and event.event_type == DagsterEventType.PIPELINE_START:
                values["start_time"] = update_timestamp.timestamp()
            if has_stats_cols and event.event_type in _ENDING_EVENTS:
                values["end_time"] = update_timestamp.timestamp()
            run = updated
        return cls({"run_body": serialize_value(run), **values}, failure_reason, had_reason_tag)


_ENDING_EVENTS = frozenset(
    {DagsterEventType.PIPELINE_CANCELED, DagsterEventType.PIPELINE_FAILURE, DagsterEventType.PIPELINE_SUCCESS}
)


_MAX_SHARDS = 4
# Schema facts per event log storage object (`EventBatchWriter._lookup`); gone with the storage.
_SCHEMA_FACTS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
# Engines of SQLite databases shared by a storage's writers (`EventBatchWriter._shared_engine`).
_SHARED_SQLITE: weakref.WeakKeyDictionary[Any, dict[str, db.Engine]] = weakref.WeakKeyDictionary()
_SHARED_SQLITE_LOCK = threading.Lock()
_POSTGRES_ENGINES: dict[str, db.Engine] = {}
_POSTGRES_ENGINES_LOCK = threading.Lock()


def _postgres_engine(url: str, token_provider: Any) -> db.Engine:
    """One small connection pool per PostgreSQL URL, kept for the process's life.

    Dagster's engines open a connection per statement (NullPool): a connect and an
    authentication per batch. Relays of one process (a supervisor, or several runs' relays in one
    service) share the pool; each batch borrows one connection for its transaction. The driver is
    psycopg2 whatever the URL names: a batch's statements are its text (`postgres_batch`).
    """
    from dagster_postgres.utils import create_pg_engine

    with _POSTGRES_ENGINES_LOCK:
        if url not in _POSTGRES_ENGINES:
            psycopg2_url = db.engine.make_url(url).set(drivername="postgresql+psycopg2")
            engine = create_pg_engine(psycopg2_url, token_provider, pool_size=2, max_overflow=8, pool_recycle=600)
            db.event.listen(engine, "checkin", _note_idle)
            db.event.listen(engine, "checkout", _ping_if_idle)
            _POSTGRES_ENGINES[url] = engine
        return _POSTGRES_ENGINES[url]


# A pooled connection idle longer than this is pinged before a batch uses it (`_ping_if_idle`).
IDLE_PING_SECONDS = 10.0


def _note_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Replace a pooled connection the server dropped while runs were quiet, before a batch uses it.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per batch, of the three or
    four a batch of the 1-in-10 mix needs (``bench/relay.py``). A connection that was handed back
    moments ago is alive; one idle for a while is pinged, and one that does not answer is
    discarded (``DisconnectionError``: the pool connects anew, up to three times). A connection
    dropped within seconds of its last batch fails the next batch's first statement, before
    anything is committed: SQLAlchemy then discards the pool's connections, and the supervisor
    reattaches and stores the batch again from the cursor, as after any dropped stream.
    """
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as error:  # whatever the driver raises for a dead connection
        raise db.exc.DisconnectionError(f"pooled PostgreSQL connection is gone: {error}") from error


def _dispose_all(engines: dict[str, db.Engine]) -> None:
    for engine in engines.values():
        engine.dispose()
    engines.clear()


def _sqlite_engine(url: str) -> db.Engine:
    """A SQLite engine whose one connection stays open and whose transactions take the write lock first.

    Dagster's own (deferred) transactions read before they write; in WAL mode a second writer
    committing in between makes the first one's write fail at once with "database is locked"
    instead of waiting. ``BEGIN IMMEDIATE`` takes the lock first, so the busy timeout applies.
    Keeping the connection open saves the open, the schema read and the WAL checkpoint that
    SQLite runs when a database's last connection closes, on every batch.
    """
    engine = db.create_engine(
        url,
        # One connection for a run's relay; more when relays of several runs share the engine
        # (`_shared_engine`): they wait for the write lock in the busy timeout, not in the pool.
        pool_size=1,
        max_overflow=8,
        pool_timeout=SQLITE_BUSY_TIMEOUT_SECONDS,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
    )
    db.event.listen(engine, "connect", _driver_autocommit)
    db.event.listen(engine, "begin", _begin_immediate)
    return engine


def _insert(connection: db.Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` in order in one statement; their ids, in the same order (INSERT ... RETURNING)."""
    if not rows:
        return []
    insert = SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True)
    return [int(event_id) for event_id in connection.execute(insert, rows).scalars()]


def _stored_texts(connection: db.Connection, run_ids: set[str], texts: list[str]) -> set[str]:
    """Which of ``texts`` (serialized events of these runs) SQLite's index shard holds already."""
    query = db.select(SqlEventLogStorageTable.c.event).where(
        SqlEventLogStorageTable.c.run_id.in_(sorted(run_ids)), SqlEventLogStorageTable.c.event.in_(texts)
    )
    return set(connection.execute(query).scalars())


def _planned_check_rows(storage: SqlEventLogStorage, item: EffectEvent, event_id: int) -> list[dict[str, Any]]:
    """The rows ``store_asset_check_event`` (1.13) inserts for an ASSET_CHECK_EVALUATION_PLANNED."""
    entry = item.entry
    planned = entry.get_dagster_event().event_specific_data
    partitions = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]  # type: ignore[union-attr]
    return [
        dict(
            asset_key=planned.asset_key.to_string(),  # type: ignore[union-attr]
            check_name=planned.check_name,  # type: ignore[union-attr]
            partition=partition,
            run_id=entry.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
            evaluation_event=item.serialized,
            evaluation_event_timestamp=storage._event_insert_timestamp(entry),
            evaluation_event_storage_id=event_id,
        )
        for partition in partitions
    ]


def _check_evaluation_row(storage: SqlEventLogStorage, item: EffectEvent, event_id: int) -> tuple[bool, dict[str, Any]]:
    """(whether Dagster updates a planned row first: the event has a run id, the row's values)."""
    entry = item.entry
    values, identity = _check_evaluation_values(storage, item, event_id)
    return bool(entry.run_id), {**identity, **values}


def _check_evaluation_values(
    storage: SqlEventLogStorage, item: EffectEvent, event_id: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values ``store_asset_check_event`` (1.13) writes for an ASSET_CHECK_EVALUATION, and the
    check execution's identity (key, check, run)."""
    entry = item.entry
    evaluation = entry.get_dagster_event().event_specific_data
    timestamp = storage._event_insert_timestamp(entry)
    values = dict(
        execution_status=(
            AssetCheckExecutionRecordStatus.SUCCEEDED.value
            if evaluation.passed  # type: ignore[union-attr]
            else AssetCheckExecutionRecordStatus.FAILED.value
        ),
        evaluation_event=item.serialized,
        evaluation_event_timestamp=timestamp,
        evaluation_event_storage_id=event_id,
        materialization_event_storage_id=(
            evaluation.target_materialization_data.storage_id  # type: ignore[union-attr]
            if evaluation.target_materialization_data  # type: ignore[union-attr]
            else None
        ),
        partition=evaluation.partition,  # type: ignore[union-attr]
    )
    identity = dict(
        asset_key=evaluation.asset_key.to_string(),  # type: ignore[union-attr]
        check_name=evaluation.check_name,  # type: ignore[union-attr]
        run_id=entry.run_id,
    )
    return values, identity


def _store_check_evaluation(
    storage: SqlEventLogStorage, connection: db.Connection, item: EffectEvent, event_id: int
) -> None:
    """``SqlEventLogStorage.store_asset_check_event`` (1.13) of an ASSET_CHECK_EVALUATION, on the batch's connection."""
    entry = item.entry
    evaluation = entry.get_dagster_event().event_specific_data
    table = AssetCheckExecutionsTable
    values, identity = _check_evaluation_values(storage, item, event_id)
    if entry.run_id:
        partition_clause = (
            table.c.partition.is_(None) if evaluation.partition is None else table.c.partition == evaluation.partition  # type: ignore[union-attr]
        )
        updated = connection.execute(
            table.update()
            .where(
                table.c.asset_key == identity["asset_key"],
                table.c.check_name == identity["check_name"],
                table.c.run_id == entry.run_id,
                partition_clause,
            )
            .values(**values)
        ).rowcount
        if updated > 1:
            raise RuntimeError(
                f"Updated {updated} rows for asset check evaluation {evaluation.asset_check_key} "  # type: ignore[union-attr]
                "as a result of duplicate AssetCheckPlanned events."
            )
        if updated == 1:
            return
    connection.execute(table.insert().values(**identity, **values))


def _indexed_tags(storage: SqlEventLogStorage, item: EffectEvent) -> dict[str, str]:
    """``SqlEventLogStorage._tags_for_asset_event`` (1.13) of the event's own tags."""
    indexed = storage.get_asset_tags_to_index(set(item.asset_tags))
    return {key: value for key, value in item.asset_tags.items() if key in indexed}


def _asset_entry_values(item: EffectEvent, event_id: int, has_index_cols: bool) -> dict[str, Any]:
    """``SqlEventLogStorage._get_asset_entry_values`` (1.13), with the event's text already in hand.

    Dagster's serializes the materialization's whole record again for ``last_materialization``;
    here its text is the event's text inside the record's envelope (`_record_text`).
    """
    times = {"last_materialization_timestamp": datetime_from_timestamp(item.timestamp)} if has_index_cols else {}
    if item.event_type == DagsterEventType.ASSET_MATERIALIZATION:
        return {"last_materialization": _record_text(item.serialized, event_id), "last_run_id": item.run_id, **times}
    if item.event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
        return {"last_run_id": item.run_id, **times}
    if item.event_type == DagsterEventType.ASSET_OBSERVATION:
        return times
    return {}


def _record_envelope() -> tuple[str, str, str]:
    """How ``serialize_value(EventLogRecord(storage_id, entry))`` wraps the entry's text and the id,
    read off Dagster's own serialization of a probe record (so a Dagster that serializes records
    differently fails here, at import, instead of storing something else)."""
    probe_id = 987654321
    probe = EventLogEntry(None, 20, "probe", "probe-run", 1.5)
    record = serialize_value(EventLogRecord(storage_id=probe_id, event_log_entry=probe))
    head, found, tail = record.partition(serialize_value(probe))
    middle, found_id, end = tail.partition(str(probe_id))
    if not found or not found_id:
        raise RuntimeError(f"unexpected serialization of EventLogRecord: {record}")
    return head, middle, end


_RECORD_HEAD, _RECORD_MIDDLE, _RECORD_END = _record_envelope()


def _record_text(serialized_entry: str, storage_id: int) -> str:
    return f"{_RECORD_HEAD}{serialized_entry}{_RECORD_MIDDLE}{storage_id}{_RECORD_END}"


def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the transaction is begun explicitly (`_begin_immediate`)


def _begin_immediate(connection: db.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
