"""Relayed events stored in batches read back exactly as Dagster's own storing of the same events.

The independent source is Dagster: instance A stores every event of real runs through
``handle_new_event``, one by one; instance B gets the same events through
`EventBatchWriter` (batches of 37, as the relay hands them over). Everything Dagster reads back
must be equal, storage ids included, on a SQLite and on a PostgreSQL instance.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, deserialize_value, serialize_value
from dagster._core.definitions.asset_checks.asset_check_spec import AssetCheckKey
from dagster._core.event_api import AssetRecordsFilter, EventRecordsFilter
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.dagster_run import RunsFilter

from osiris_dagster.remote.event_batches import EventBatchWriter, PlainEvent
from tests.conftest import REPO
from tests.remote.relay_streams import instance, new_run, real_runs

STORAGES = ["sqlite", "postgres"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    import shutil

    root = tmp_path_factory.mktemp("real_runs")
    project = root / "project"
    project.mkdir()
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, project / name)
    shutil.copy(REPO / "workspace.yaml", project / "workspace.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSIRIS_", "MYSQL_", "DAGSTER_"))}
    (root / "demo_home").mkdir()
    env["DAGSTER_HOME"] = str(root / "demo_home")
    return real_runs(project, env, root / "assets_home")


def _dagster_stores(target: DagsterInstance, runs: list[Any]) -> None:
    for run, events in runs:
        new_run(target, run)
        for entry in events:
            target.handle_new_event(entry)


def _writer_stores(target: DagsterInstance, runs: list[Any], batch: int = 37) -> None:
    """The events as the relay hands them to the writer: plain ones as their JSON, the rest deserialized."""
    writer = EventBatchWriter(target)
    for run, events in runs:
        new_run(target, run)
        items = []
        for entry in events:
            text = serialize_value(entry)
            items.append(PlainEvent.parse(text) or deserialize_value(text, EventLogEntry))
        for start in range(0, len(items), batch):
            writer.store(items[start : start + batch])


def read_back(target: DagsterInstance, runs: list[Any]) -> dict[str, Any]:
    """Everything Dagster reads back about these runs and their assets, in comparable form."""
    storage = target.event_log_storage
    run_ids = [run.run_id for run, _ in runs]
    types = sorted({e.dagster_event_type for _, events in runs for e in events if e.dagster_event_type}, key=str)
    asset_keys = sorted({key for key in target.get_asset_keys()}, key=lambda k: k.to_string())
    check_keys = sorted(
        {
            AssetCheckKey(e.dagster_event.event_specific_data.asset_key, e.dagster_event.event_specific_data.check_name)
            for _, events in runs
            for e in events
            if e.dagster_event_type
            in (DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
        },
        key=str,
    )
    records = {
        run_id: [(r.storage_id, serialize_value(r.event_log_entry)) for r in target.get_records_for_run(run_id).records]
        for run_id in run_ids
    }
    by_type = {
        str(t): [
            (r.storage_id, serialize_value(r.event_log_entry))
            for r in storage.get_event_records(EventRecordsFilter(event_type=t), limit=10_000, ascending=True)
        ]
        for t in types
    }
    assets = {}
    for key in asset_keys:
        (record,) = target.get_asset_records([key])
        entry = record.asset_entry
        latest = target.get_latest_materialization_event(key)
        materializations = target.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=10_000).records
        observations = target.fetch_observations(AssetRecordsFilter(asset_key=key), limit=10_000).records
        assets[key.to_user_string()] = {
            "last_materialization": serialize_value(entry.last_materialization_record),
            "last_run_id": entry.last_run_id,
            "last_observation": serialize_value(entry.last_observation_record),
            "last_planned_storage_id": entry.last_planned_materialization_storage_id,
            "latest_event": serialize_value(latest),
            "count_by_partition": Counter(r.partition_key for r in materializations),
            "observed_partitions": Counter(r.partition_key for r in observations),
            "materialized_partitions": sorted(target.get_materialized_partitions(key)),
            "latest_by_partition": dict(
                storage.get_latest_storage_id_by_partition(key, DagsterEventType.ASSET_MATERIALIZATION)
            ),
            "entry": repr(entry),
            "event_tags": [dict(tags) for tags in storage.get_event_tags_for_asset(key)],
            "data_versions": {
                event_type.value: dict(
                    storage.get_latest_tags_by_partition(key, event_type, tag_keys=["dagster/data_version"])
                )
                for event_type in (DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION)
            },
        }
    checks = {
        check_key.to_user_string(): [
            (r.id, r.run_id, r.status.value, serialize_value(r.event), r.partition)
            for r in storage.get_asset_check_execution_history(check_key, limit=1000)
        ]
        for check_key in check_keys
    }
    run_state = {  # the run rows: status, body (tags included), start/end and update times
        r.dagster_run.run_id: (
            r.dagster_run.status.value,
            serialize_value(r.dagster_run),
            r.start_time,
            r.end_time,
            r.update_timestamp,
        )
        for r in target.get_run_records(RunsFilter(run_ids=run_ids))
    }
    run_tags = sorted((key, sorted(values)) for key, values in target.get_run_tags(list(target.get_run_tag_keys())))
    stats = {run_id: serialize_value(target.get_run_stats(run_id)) for run_id in run_ids}
    return {
        "records": records,
        "by_type": by_type,
        "assets": assets,
        "checks": checks,
        "runs": run_state,
        "run_tags": run_tags,
        "stats": stats,
    }


@pytest.mark.parametrize("storage", STORAGES)
def test_relayed_batches_read_back_exactly_as_dagster_stores_them(
    storage: str, runs: list[Any], tmp_path: Path
) -> None:
    with instance(storage, tmp_path / "a") as dagster_home, instance(storage, tmp_path / "b") as relay_home:
        _dagster_stores(dagster_home, runs)
        _writer_stores(relay_home, runs)
        expected, actual = read_back(dagster_home, runs), read_back(relay_home, runs)

    # The streams hold what batching must get right (else the comparison could pass on nothing).
    assert Counter(status for status, *_ in expected["runs"].values()) == {"SUCCESS": 3, "FAILURE": 1}
    regions = expected["assets"]["regions"]
    assert regions["count_by_partition"] == {"north": 1, "south": 1}
    assert regions["data_versions"]["ASSET_MATERIALIZATION"] == {
        "north": {"dagster/data_version": "v-north"},
        "south": {"dagster/data_version": "v-south"},
    }
    assert expected["assets"]["regions_source"]["observed_partitions"] == {"north": 1, "south": 1}
    assert [r[2] for r in expected["checks"]["regions:fresh"]] == [
        "FAILED",
        "SUCCEEDED",
    ]
    assert sum(len(records) for records in expected["records"].values()) > 100

    assert actual["records"] == expected["records"]
    assert actual["by_type"] == expected["by_type"]
    assert actual["assets"] == expected["assets"]
    assert actual["checks"] == expected["checks"]
    assert actual["runs"] == expected["runs"]
    assert actual["run_tags"] == expected["run_tags"]
    assert actual["stats"] == expected["stats"]
