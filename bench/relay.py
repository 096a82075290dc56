"""Relay throughput: lines of a sandbox worker -> events in the host instance, per second.

Feeds `EventRelay` the worker's protocol lines in 32 KiB chunks (as the e2b SDK delivers them) and
times until every event is committed, into a SQLite-backed and a PostgreSQL-backed instance
(a scratch database on 127.0.0.1:5432, dropped afterwards). Two mixes:

* ``plain``: engine events and log messages only — the bulk of any run, one INSERT per batch;
* ``run-like``: one asset materialization per 10 events (roughly a real job's share of events that
  update the asset index and so are stored one by one through ``handle_new_event``).

Baseline in the same invocation: ``handle_new_event`` per event, as the relay stored before.

    .venv/bin/python bench/relay.py [--events N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import AssetMaterialization, DagsterInstance, serialize_value
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData, StepMaterializationData
from dagster._core.events.log import EventLogEntry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osiris_dagster.remote import relay_protocol
from osiris_dagster.remote.event_relay import EventRelay

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _entries(run_id: str, count: int, mix: str) -> list[EventLogEntry]:
    entries = []
    for i in range(count):
        if mix == "run-like" and i % 10 == 9:
            event = DagsterEvent(
                DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name="j",
                step_key=f"step_{i // 10}",
                event_specific_data=StepMaterializationData(
                    AssetMaterialization(asset_key=f"asset_{i // 10 % 50}", metadata={"rows": i})
                ),
            )
        elif i % 2:
            event = None  # a log message from a step
        else:
            data = EngineEventData()
            event = DagsterEvent(DagsterEventType.ENGINE_EVENT.value, job_name="j", event_specific_data=data)
        entries.append(EventLogEntry(None, 20, f"event {i}", run_id, time.time(), dagster_event=event))
    return entries


def _relay(instance: DagsterInstance, work: Path, count: int, mix: str) -> float:
    run_id = str(uuid.uuid4())
    lines = "".join(
        relay_protocol.protocol_line(i + 1, relay_protocol.EVENT, serialize_value(entry))
        for i, entry in enumerate(_entries(run_id, count, mix))
    )
    relay = EventRelay(instance, run_id, work / f"{run_id}.cursor")
    started = time.perf_counter()
    for start in range(0, len(lines), 32 * 1024):
        relay.feed(lines[start : start + 32 * 1024])
    relay.close()
    elapsed = time.perf_counter() - started
    assert relay.events_stored == count and len(instance.all_logs(run_id)) == count
    return count / elapsed


def _per_event(instance: DagsterInstance, count: int) -> float:
    entries = _entries(str(uuid.uuid4()), count, "plain")
    started = time.perf_counter()
    for entry in entries:
        instance.handle_new_event(entry)
    return count / (time.perf_counter() - started)


@contextmanager
def sqlite_instance(work: Path) -> Iterator[DagsterInstance]:
    home = work / "sqlite_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


@contextmanager
def postgres_instance(work: Path) -> Iterator[DagsterInstance]:
    import psycopg

    # psycopg2 explicitly: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, on which
    # dagster-postgres's per-event NOTIFY with a bound parameter is a syntax error.
    name = f"osiris_relay_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    home = work / "pg_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\nstorage:\n  postgres:\n    postgres_url: "
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}\n"
    )
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def measure(count: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for storage, opener in (("sqlite", sqlite_instance), ("postgres", postgres_instance)):
            with opener(work) as instance:
                _relay(instance, work, 200, "plain")  # warm-up: tables, connections
                results[storage] = {
                    "plain": _relay(instance, work, count, "plain"),
                    "run-like": _relay(instance, work, count, "run-like"),
                    "per-event baseline": _per_event(instance, min(count, 1000)),
                }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    targets = {"sqlite": 2000, "postgres": 5000}
    for storage, figures in measure(args.events).items():
        baseline = figures["per-event baseline"]
        print(
            f"relay into {storage:<8}: plain {figures['plain']:>8,.0f} events/s, run-like {figures['run-like']:>7,.0f}"
            f" events/s; handle_new_event per event {baseline:,.0f} events/s "
            f"(x{figures['plain'] / baseline:.0f}); target >= {targets[storage]:,}"
        )


if __name__ == "__main__":
    main()
