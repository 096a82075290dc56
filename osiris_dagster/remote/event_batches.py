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

So a batch (what one stdout chunk delivers, ~30-80 events) is written in as few transactions as
there are databases:

* **PostgreSQL**: ONE transaction for everything — the ``event_logs`` rows in relay order, the
  ``asset_event_tags``, the ``asset_keys`` index, the ``asset_check_executions``. A batch is
  all-or-nothing; a relay that dies mid-batch stores it again from its cursor.
* **SQLite** (a shard per run plus the ``index`` shard): the index shard's transaction first
  (mirror rows of asset and check events, tags, ``asset_keys``, check executions — what
  Dagster's SQLite storage puts there), under ``BEGIN IMMEDIATE`` so concurrent relays wait on
  the lock instead of failing with "database is locked"; then the run shard's rows in one
  transaction. A relay killed between the two commits has not advanced its cursor, so it
  stores the batch again; the index part then skips the events whose mirror row (same run,
  same serialized event) is already there. Either way each event ends up stored once.

Row contents are Dagster's own: ``_event_to_row`` for asset, check and other events with
effects, and for **plain** events (step, output, log, engine events — the bulk of a run, whose
row is all there is) the same columns built from the line's JSON (`PlainEvent`), skipping a
deserialize/serialize round trip that alone cost ~370 µs per event. Effects follow Dagster
1.13's ``store_event`` of each storage: tags through Dagster's ``_store_asset_event_tags``, the
values of ``asset_keys`` from ``_get_asset_entry_values``, the check execution rows as
``store_asset_check_event`` writes them (written here only because Dagster's functions open
connections of their own, outside the batch's transaction). ``asset_keys`` gets one upsert per
asset key per batch, in key order, with the values of the batch's events merged in relay order
(the row an event-by-event upsert would leave) — sorted so that two relays' transactions never
lock the same keys in opposite orders (a deadlock on PostgreSQL).

Run-status events (RUN_START, RUN_SUCCESS, ...) go through ``handle_new_event``, one by one,
after everything before them is committed: they are a handful per run, and they move the run's
status in run storage too. So are all events of a storage that is neither SQLite's nor
PostgreSQL's (plain events are still batched for any `SqlEventLogStorage`).

Deliberately not done: in-process subscribers (``instance.add_event_listener``) of batched events
are not called — the supervisor has none; the UI and the daemon read storage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import sqlalchemy as db
from dagster import DagsterInstance, deserialize_value, serialize_value
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, PIPELINE_EVENTS, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.migration import ASSET_KEY_INDEX_COLS
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    AssetEventTagsTable,
    AssetKeyTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool

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


def _is_asset_event(entry: EventLogEntry) -> bool:
    event = entry.dagster_event
    return event is not None and event.event_type in ASSET_EVENTS and event.asset_key is not None


def _is_check_event(entry: EventLogEntry) -> bool:
    return entry.dagster_event is not None and entry.dagster_event.event_type in ASSET_CHECK_EVENTS


class EventBatchWriter:
    def __init__(self, instance: DagsterInstance) -> None:
        self._instance = instance
        storage = instance.event_log_storage
        self._storage = storage if isinstance(storage, SqlEventLogStorage) else None
        self._sqlite = storage if isinstance(storage, SqliteEventLogStorage) else None
        self._postgres = self._storage is not None and self._storage.__class__.__name__ == "PostgresEventLogStorage"
        self._index_engine: db.Engine | None = None
        self._has_tags_table: bool | None = None

    def store(self, items: Sequence[EventLogEntry | PlainEvent]) -> None:
        """Store ``items`` in order; returns when every one is committed."""
        pending: list[EventLogEntry | PlainEvent] = []
        for item in items:
            if isinstance(item, PlainEvent) or self._batches(item):
                pending.append(item)
                continue
            self._write(pending)
            pending = []
            self._instance.handle_new_event(item)
        self._write(pending)

    def _batches(self, entry: EventLogEntry) -> bool:
        """Whether this writer stores ``entry`` itself (else: ``handle_new_event``)."""
        event = entry.dagster_event
        if event is not None and event.event_type in PIPELINE_EVENTS:
            return False
        return self._sqlite is not None or self._postgres

    def _write(self, items: list[EventLogEntry | PlainEvent]) -> None:
        storage = self._storage
        if not items:
            return
        if storage is None:
            for item in items:
                self._instance.handle_new_event(item.entry() if isinstance(item, PlainEvent) else item)
            return
        kept = [item for item in items if isinstance(item, PlainEvent) or self._instance.should_store_event(item)]
        rows = [self._row(item) for item in kept]
        if self._postgres:
            with storage.index_transaction() as connection:
                ids = _insert(connection, rows, kept)
                self._store_effects(connection, kept, ids)
            return
        if self._sqlite is not None:
            self._store_index_shard(kept, rows)
        by_run: dict[str, list[dict[str, Any]]] = {}
        for row in rows:  # one relay serves one run; keep it correct for mixed input anyway
            by_run.setdefault(row["run_id"], []).append(row)
        for run_id, run_rows in by_run.items():
            with storage.run_connection(run_id) as connection:
                connection.execute(SqlEventLogStorageTable.insert(), run_rows)

    def _row(self, item: EventLogEntry | PlainEvent) -> dict[str, Any]:
        storage = self._storage
        assert storage is not None
        if not isinstance(item, PlainEvent):
            return storage._event_to_row(item)
        return {
            "run_id": item.run_id,
            "event": item.serialized,
            "dagster_event_type": item.event_type,
            "timestamp": storage._event_insert_timestamp(SimpleNamespace(timestamp=item.timestamp)),
            "step_key": item.step_key,
            "asset_key": None,
            "partition": None,
        }

    # -- SQLite's index shard ----------------------------------------------------------------
    def _store_index_shard(self, items: list[EventLogEntry | PlainEvent], rows: list[dict[str, Any]]) -> None:
        """Mirror the asset and check events in the index shard, with their effects, unless already there."""
        mirrored = [
            (item, row)
            for item, row in zip(items, rows, strict=True)
            if not isinstance(item, PlainEvent) and (_is_asset_event(item) or _is_check_event(item))
        ]
        if not mirrored:
            return
        with self._immediate_index_transaction() as connection:
            present = _stored_texts(
                connection, {row["run_id"] for _, row in mirrored}, [row["event"] for _, row in mirrored]
            )
            todo = [(item, row) for item, row in mirrored if row["event"] not in present]
            entries = [item for item, _ in todo]
            ids = _insert(connection, [row for _, row in todo], entries)
            self._store_effects(connection, entries, ids)

    @contextmanager
    def _immediate_index_transaction(self) -> Iterator[db.Connection]:
        """A transaction on the index shard that holds the write lock from its start.

        Dagster's own (deferred) transactions read before they write; in WAL mode a second writer
        committing in between makes the first one's write fail at once with "database is locked"
        instead of waiting. ``BEGIN IMMEDIATE`` takes the lock first, so the busy timeout applies.
        """
        assert self._sqlite is not None
        if self._index_engine is None:
            engine = db.create_engine(
                self._sqlite.conn_string_for_shard(INDEX_SHARD_NAME),
                poolclass=NullPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            db.event.listen(engine, "connect", _driver_autocommit)
            db.event.listen(engine, "begin", _begin_immediate)
            self._index_engine = engine
        with self._index_engine.begin() as connection:
            yield connection

    # -- effects (both storages) -----------------------------------------------------------
    def _store_effects(
        self, connection: db.Connection, items: Sequence[EventLogEntry | PlainEvent], ids: Sequence[int]
    ) -> None:
        storage = self._storage
        assert storage is not None
        assets = [
            (entry, event_id)
            for entry, event_id in zip(items, ids, strict=True)
            if isinstance(entry, EventLogEntry) and _is_asset_event(entry)
        ]
        if assets:
            self._store_tags(connection, assets)
            self._store_asset_keys(connection, assets)
        for entry, event_id in zip(items, ids, strict=True):
            if isinstance(entry, EventLogEntry) and _is_check_event(entry):
                _store_check_event(storage, connection, entry, event_id)

    def _store_tags(self, connection: db.Connection, assets: list[tuple[EventLogEntry, int]]) -> None:
        """``_store_asset_event_tags``, with the table's existence looked up once, not per batch."""
        storage = self._storage
        assert storage is not None
        rows = [
            dict(
                event_id=event_id,
                asset_key=entry.dagster_event.asset_key.to_string(),  # type: ignore[union-attr]
                key=key,
                value=value,
                event_timestamp=storage._event_insert_timestamp(entry),
            )
            for entry, event_id in assets
            for key, value in storage._tags_for_asset_event(entry).items()
        ]
        if not rows:
            return
        if self._has_tags_table is None:
            self._has_tags_table = storage.has_table(AssetEventTagsTable.name)
        if self._has_tags_table:
            connection.execute(AssetEventTagsTable.insert(), rows)

    def _store_asset_keys(self, connection: db.Connection, assets: list[tuple[EventLogEntry, int]]) -> None:
        storage = self._storage
        assert storage is not None
        if self._postgres:
            has_index_cols = storage.has_secondary_index(ASSET_KEY_INDEX_COLS)
        else:
            has_index_cols = storage._has_asset_key_index_cols_on_connection(connection)
        merged: dict[str, dict[str, Any]] = {}
        for entry, event_id in assets:
            key = entry.dagster_event.asset_key.to_string()  # type: ignore[union-attr]
            merged.setdefault(key, {}).update(storage._get_asset_entry_values(entry, event_id, has_index_cols))
        for key in sorted(merged):
            values = merged[key]
            if self._postgres:
                upsert = postgresql.insert(AssetKeyTable).values(asset_key=key, **values)
                connection.execute(
                    upsert.on_conflict_do_update(index_elements=[AssetKeyTable.c.asset_key], set_=values)
                    if values
                    else upsert.on_conflict_do_nothing()
                )
            elif values:  # SQLite's storage leaves asset_keys alone for an event without values
                upsert = sqlite.insert(AssetKeyTable).values(asset_key=key, **values)
                connection.execute(
                    upsert.on_conflict_do_update(index_elements=[AssetKeyTable.c.asset_key], set_=values)
                )


def _insert(connection: db.Connection, rows: list[dict[str, Any]], items: Sequence[Any]) -> list[int]:
    """Insert ``rows`` in order: runs of plain rows as one executemany, others one by one for their id.

    Only the ids of events with effects are needed (they key the asset and check tables); -1
    stands for the rest.
    """
    ids: list[int] = []
    plain: list[dict[str, Any]] = []
    insert = SqlEventLogStorageTable.insert()
    for item, row in zip(items, rows, strict=True):
        if isinstance(item, PlainEvent):
            plain.append(row)
            ids.append(-1)
            continue
        if plain:
            connection.execute(insert, plain)
            plain = []
        ids.append(int(connection.execute(insert, row).inserted_primary_key[0]))
    if plain:
        connection.execute(insert, plain)
    return ids


def _stored_texts(connection: db.Connection, run_ids: set[str], texts: list[str]) -> set[str]:
    """Which of ``texts`` (serialized events of these runs) SQLite's index shard holds already."""
    query = db.select(SqlEventLogStorageTable.c.event).where(
        SqlEventLogStorageTable.c.run_id.in_(sorted(run_ids)), SqlEventLogStorageTable.c.event.in_(texts)
    )
    return set(connection.execute(query).scalars())


def _store_check_event(
    storage: SqlEventLogStorage, connection: db.Connection, entry: EventLogEntry, event_id: int
) -> None:
    """``SqlEventLogStorage.store_asset_check_event`` (1.13), on the batch's connection."""
    if not storage.supports_asset_checks:
        raise RuntimeError("Asset checks require a database schema migration. Run `dagster instance migrate`.")
    event = entry.dagster_event
    assert event is not None
    table = AssetCheckExecutionsTable
    timestamp = storage._event_insert_timestamp(entry)
    if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
        planned = event.event_specific_data
        partitions = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]  # type: ignore[union-attr]
        connection.execute(
            table.insert(),
            [
                dict(
                    asset_key=planned.asset_key.to_string(),  # type: ignore[union-attr]
                    check_name=planned.check_name,  # type: ignore[union-attr]
                    partition=partition,
                    run_id=entry.run_id,
                    execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                    evaluation_event=serialize_value(entry),
                    evaluation_event_timestamp=timestamp,
                    evaluation_event_storage_id=event_id,
                )
                for partition in partitions
            ],
        )
        return
    evaluation = event.event_specific_data
    values = dict(
        execution_status=(
            AssetCheckExecutionRecordStatus.SUCCEEDED.value
            if evaluation.passed  # type: ignore[union-attr]
            else AssetCheckExecutionRecordStatus.FAILED.value
        ),
        evaluation_event=serialize_value(entry),
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


def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the transaction is begun explicitly (`_begin_immediate`)


def _begin_immediate(connection: db.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
