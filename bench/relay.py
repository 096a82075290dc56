"""Relay throughput: lines of a sandbox worker -> events in the host instance, per second.

Feeds `EventRelay` the worker's protocol lines in 32 KiB chunks (as the e2b SDK delivers them) and
times until every event is committed (the held terminal event released, as the supervisor does),
into a SQLite-backed and a PostgreSQL-backed instance (a scratch database on 127.0.0.1:5432,
dropped afterwards). Three mixes:

* ``plain``: engine events and log messages only — the bulk of any run;
* ``1-in-10``: one asset materialization per 10 events (events that move the asset index);
* ``demo``: the event stream of a real run of the demo job (`dagster job execute` of
  ``movies_to_csv``, recorded at the start of this invocation): run-status events, planned
  materializations, steps, logs, materializations. It is short (~100 events), so it is relayed
  as many runs, each under a fresh run id, one after the other.

Each run is first created as ``launch_run`` leaves it (its record, and RUN_STARTING stored
through Dagster, which creates a SQLite run's shard); that part is not timed.

Baseline in the same invocation: ``handle_new_event`` per event (how the relay stored before it
batched), on the plain and the demo mix. Targets (issue #13): >= 2,000 events/s (SQLite) and
>= 5,000 events/s (PostgreSQL). The load average is printed with every figure: on a shared
machine the figures are only comparable within one invocation.

Each figure starts after a full garbage collection, and the full collections inside it are
printed with it ("full gc"): one takes ~120 ms in a process with Dagster loaded (its objects are
all tracked), a third of a 5,000-event figure of the 1-in-10 mix. Without the collection before
it, where the collector's counters happened to be decided whether a figure caught one: the same
code measured 16,000 or 27,000 events/s for the 1-in-10 mix into SQLite, and a change that only
allocated differently moved a collection from one figure into another.

    .venv/bin/python bench/relay.py [--events N]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
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
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from osiris_dagster.remote import relay_protocol  # noqa: E402
from osiris_dagster.remote.event_relay import EventRelay  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CHUNK = 32 * 1024
TARGETS = {"sqlite": 2000, "postgres": 5000}


def synthetic(count: int, mix: str) -> list[EventLogEntry]:
    entries = []
    for i in range(count):
        if mix == "1-in-10" and i % 10 == 9:
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
            event = DagsterEvent(
                DagsterEventType.ENGINE_EVENT.value, job_name="j", event_specific_data=EngineEventData()
            )
        entries.append(EventLogEntry(None, 20, f"event {i}", "run", time.time(), dagster_event=event))
    return entries


def record_demo_stream(work: Path) -> list[EventLogEntry]:
    """The event log of a real run of the demo job, as its sandbox's worker would relay it."""
    project = work / "demo_project"
    project.mkdir()
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, project / name)
    home = work / "demo_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSIRIS_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(home)
    dagster = str(Path(sys.executable).with_name("dagster"))
    subprocess.run(
        [dagster, "job", "execute", "-m", "osiris_dagster.definitions", "-a", "defs", "-j", "movies_to_csv"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        return list(instance.all_logs(run.run_id))


def launched_run(instance: DagsterInstance) -> str:
    """A run as ``launch_run`` leaves it before the sandbox's first line: its record and RUN_STARTING."""
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="bench", run_id=run_id, status=DagsterRunStatus.NOT_STARTED))
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_STARTING.value, job_name="bench", message="launching"), run_id=run_id
    )
    return run_id


class FullCollections:
    """The full (generation 2) garbage collections while it is entered: how many, how long."""

    def __init__(self) -> None:
        self.count, self.seconds, self._since = 0, 0.0, 0.0

    def __enter__(self) -> FullCollections:
        gc.collect()  # every figure starts with the collector's counters at zero
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2 and phase == "start":
            self._since = time.perf_counter()
        elif info["generation"] == 2:
            self.count += 1
            self.seconds += time.perf_counter() - self._since

    def __str__(self) -> str:
        return f"full gc {self.count} x {1000 * self.seconds:.0f} ms"


def relay_runs(
    instance: DagsterInstance, work: Path, stream: list[EventLogEntry], total: int
) -> tuple[float, FullCollections]:
    """Relay ``stream`` as consecutive runs until ``total`` events are stored; events/s, and the
    full collections in that time."""
    runs = []
    for _ in range(max(1, total // len(stream))):
        run_id = launched_run(instance)
        lines = "".join(
            relay_protocol.protocol_line(seq, relay_protocol.EVENT, serialize_value(entry._replace(run_id=run_id)))
            for seq, entry in enumerate(stream, start=1)
        )
        runs.append((run_id, lines))
    stored = 0
    with FullCollections() as collections:
        started = time.perf_counter()
        for run_id, lines in runs:
            relay = EventRelay(instance, run_id, work / f"{run_id}.cursor")
            for start in range(0, len(lines), CHUNK):
                relay.feed(lines[start : start + CHUNK])
            relay.close()
            relay.release_held()
            stored += relay.events_stored
        elapsed = time.perf_counter() - started
    assert stored == len(runs) * len(stream)
    for run_id, _ in runs[:2]:
        assert len(instance.all_logs(run_id)) == len(stream) + 1  # and RUN_STARTING
    return stored / elapsed, collections


def per_event(instance: DagsterInstance, stream: list[EventLogEntry], total: int) -> float:
    """The baseline: ``handle_new_event`` for every event, as runs of ``stream``."""
    entries = []
    for _ in range(max(1, total // len(stream))):
        run_id = launched_run(instance)
        entries += [entry._replace(run_id=run_id) for entry in stream]
    started = time.perf_counter()
    for entry in entries:
        instance.handle_new_event(entry)
    return len(entries) / (time.perf_counter() - started)


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


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events relayed per figure")
    parser.add_argument("--baseline-events", type=int, default=1_000, help="events stored one by one per baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = record_demo_stream(work)
        print(f"demo stream: {len(demo)} events of a real run of movies_to_csv ({load()})")
        mixes = {"plain": synthetic(1000, "plain"), "1-in-10": synthetic(1000, "1-in-10"), "demo": demo}
        for storage, opener in (("sqlite", sqlite_instance), ("postgres", postgres_instance)):
            with opener(work) as instance:
                relay_runs(instance, work, mixes["plain"][:200], 200)  # warm-up: tables, connections
                figures = {}
                for mix, stream in mixes.items():
                    figures[mix], collections = relay_runs(instance, work, stream, args.events)
                    print(f"relay into {storage:<8} {mix:<8} {figures[mix]:>8,.0f} events/s  ({load()}; {collections})")
                for mix in ("plain", "demo"):
                    base = per_event(instance, mixes[mix], args.baseline_events)
                    print(
                        f"  baseline {storage:<8} {mix:<8} {base:>8,.0f} events/s with handle_new_event per event"
                        f" -> relay x{figures[mix] / base:.1f}  ({load()})"
                    )
                verdict = ", ".join(
                    f"{mix} {'met' if figures[mix] >= TARGETS[storage] else 'NOT met'}" for mix in figures
                )
                print(f"  target >= {TARGETS[storage]:,} events/s into {storage}: {verdict}")


if __name__ == "__main__":
    main()
