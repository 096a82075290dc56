"""Two relays storing the same asset at once: the asset index ends on the newest materialization.

An asset's ``asset_keys`` row names its latest materialization; Dagster reads it for the UI's
"last materialized" and for ``get_latest_materialization_event``. With PostgreSQL storage the
ids come from a sequence (a batch takes its events' ids before writing them), and the row is
written later in the batch's transaction. The interleaving CI once hit by chance is forced here:
relay A takes its event's id and stops before writing the event and the row; relay B stores the
same asset; then A goes on. The expected value is
the storage's own order (the highest storage id among the asset's materializations), not anything
the relay reports.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, AssetMaterialization
from dagster._core.event_api import AssetRecordsFilter
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry

from osiris_dagster.remote.event_batches import EventBatchWriter
from osiris_dagster.remote.postgres_batch import PostgresBatch
from tests.remote.relay_streams import instance

pytestmark = pytest.mark.postgres

KEY = AssetKey(["shared", "table"])


def _materialization(run_id: str) -> EventLogEntry:
    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="job",
        step_key="step",
        event_specific_data=StepMaterializationData(AssetMaterialization(asset_key=KEY, metadata={"run": run_id})),
    )
    return EventLogEntry(None, 20, "materialized", run_id, time.time(), step_key="step", dagster_event=event)


def test_the_asset_index_follows_storage_order_when_two_relays_interleave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_a, run_b = str(uuid.uuid4()), str(uuid.uuid4())
    a_inserted, a_may_go = threading.Event(), threading.Event()
    claim = PostgresBatch.claim

    def claim_then_wait_in_a(batch: PostgresBatch, rows: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        runs = claim(batch, rows, **kwargs)
        if rows and rows[0]["run_id"] == run_a:
            assert "id" in rows[0]  # A has its place in storage order
            a_inserted.set()
            a_may_go.wait(timeout=60)
        return runs

    monkeypatch.setattr(PostgresBatch, "claim", claim_then_wait_in_a)
    with instance("postgres", tmp_path / "home") as target:
        errors: list[BaseException] = []

        def store(run_id: str) -> None:
            writer = EventBatchWriter(target)
            try:
                writer.store([_materialization(run_id)])
            except BaseException as error:  # reported by the test thread
                errors.append(error)
            finally:
                writer.close()

        relay_a = threading.Thread(target=store, args=(run_a,))
        relay_a.start()
        assert a_inserted.wait(timeout=60)
        relay_b = threading.Thread(target=store, args=(run_b,))
        relay_b.start()
        relay_b.join(timeout=2)  # B either finishes now (no ordering) or waits for A's commit
        a_may_go.set()
        relay_a.join(timeout=60)
        relay_b.join(timeout=60)
        assert not errors, errors
        assert not relay_a.is_alive() and not relay_b.is_alive()

        records = target.fetch_materializations(AssetRecordsFilter(asset_key=KEY), limit=10).records
        assert sorted(r.run_id for r in records) == sorted([run_a, run_b])
        newest = max(records, key=lambda r: r.storage_id)
        latest = target.get_latest_materialization_event(KEY)
        assert latest is not None
        assert (latest.run_id, latest.timestamp) == (newest.event_log_entry.run_id, newest.event_log_entry.timestamp)
