"""Event streams of real Dagster runs, and instances to store them in: shared by the relay's storage tests.

The runs are real: the demo job through `dagster job execute`, and a job of partitioned assets with
observations, data versions, asset checks (one failing) and a failing step, executed by Dagster
in-process. Their event logs, read back from the instance that ran them, are what a sandbox's
worker would relay.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetObservation,
    DagsterInstance,
    DataVersion,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
    materialize,
    serialize_value,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from osiris_dagster.remote import relay_protocol
from tests.conftest import POSTGRES_START

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@asset(
    partitions_def=StaticPartitionsDefinition(["north", "south"]),
    check_specs=[AssetCheckSpec("rows_positive", asset="regions"), AssetCheckSpec("fresh", asset="regions")],
)
def regions(context) -> MaterializeResult:  # type: ignore[no-untyped-def]  # (a string annotation is refused)
    context.log_event(
        AssetObservation(
            asset_key="regions_source",
            partition=context.partition_key,
            metadata={"seen": 3},
            tags={"dagster/data_version": f"src-{context.partition_key}"},
        )
    )
    return MaterializeResult(
        metadata={"rows": 3},
        data_version=DataVersion(f"v-{context.partition_key}"),
        check_results=[
            AssetCheckResult(check_name="rows_positive", passed=True, metadata={"rows": 3}),
            AssetCheckResult(check_name="fresh", passed=context.partition_key == "north"),
        ],
    )


@asset(deps=[regions])
def region_summary() -> MaterializeResult:
    return MaterializeResult(metadata={"regions": 2})


@asset
def broken() -> None:
    raise RuntimeError("the source table is gone")


def real_runs(project: Path, env: dict[str, str], home: Path) -> list[tuple[DagsterRun, list[EventLogEntry]]]:
    """(run, its event log) of real runs: the demo job, two partitions, a failing run."""
    from tests.remote.conftest import dagster_execute

    demo_id = dagster_execute(project, env)
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    with DagsterInstance.from_config(str(home)) as instance:
        materialize([regions], partition_key="north", instance=instance)
        materialize([regions], partition_key="south", instance=instance)
        materialize([region_summary, broken], instance=instance, raise_on_error=False)
    runs = []
    for instance_home, run_ids in ((env["DAGSTER_HOME"], [demo_id]), (str(home), None)):
        with DagsterInstance.from_config(instance_home) as instance:
            records = instance.get_run_records(order_by="create_timestamp", ascending=True)
            for record in records:
                if run_ids is None or record.dagster_run.run_id in run_ids:
                    runs.append((record.dagster_run, instance.all_logs(record.dagster_run.run_id)))
    return runs


def new_run(instance: DagsterInstance, run: DagsterRun) -> None:
    """The run's record as the launcher creates it, before any of its events."""
    instance.add_run(DagsterRun(job_name=run.job_name, run_id=run.run_id, status=DagsterRunStatus.NOT_STARTED))


def worker_lines(events: list[EventLogEntry]) -> str:
    """The events as the sandbox's worker prints them (numbered protocol lines)."""
    return "".join(
        relay_protocol.protocol_line(seq, relay_protocol.EVENT, serialize_value(entry))
        for seq, entry in enumerate(events, start=1)
    )


@contextmanager
def postgres_url() -> Iterator[str]:
    """A scratch PostgreSQL database on 127.0.0.1:5432, dropped afterwards (psycopg2 URL for dagster-postgres)."""
    import psycopg

    name = f"osiris_relay_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL not reachable at 127.0.0.1:5432 ({error}) — start it with: {POSTGRES_START}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def instance_config(url: str | None) -> str:
    storage = f"storage:\n  postgres:\n    postgres_url: {url}\n" if url else ""
    return "telemetry: {enabled: false}\n" + storage


@contextmanager
def instance(kind: str, home: Path) -> Iterator[DagsterInstance]:
    """A fresh host instance with SQLite or PostgreSQL storage."""
    home.mkdir(parents=True)
    if kind == "sqlite":
        (home / "dagster.yaml").write_text(instance_config(None))
        with DagsterInstance.from_config(str(home)) as opened:
            yield opened
        return
    with postgres_url() as url:
        (home / "dagster.yaml").write_text(instance_config(url))
        with DagsterInstance.from_config(str(home)) as opened:
            yield opened
