"""The sandbox's cost of storing a run's events: Dagster's on-disk sqlite log vs the relayed in-memory one.

    .venv/bin/python bench/sandbox_event_log.py [--ops 40] [--repeat 3]

Runs the same chain of trivial ops (each logs one message) in-process on an instance with the
stock sqlite event log and on one with `relayed_event_log` (which also appends every event to a
durable log, as the worker does), interleaved; prints the median run time, ms per event and the
load average. The on-disk figure leaves out the worker's poll that re-read every event, so the
sandbox's real saving is larger.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
from dagster import DagsterInstance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from osiris_dagster.remote import relay_protocol, relayed_event_log


def chain_job(ops: int) -> dg.JobDefinition:
    @dg.op
    def start() -> int:
        return 0

    def make_op(index: int) -> dg.OpDefinition:
        @dg.op(name=f"op{index}")
        def step(context, value: int) -> int:  # type: ignore[no-untyped-def]
            context.log.info("one message")
            return value + 1

        return step

    steps = [make_op(i) for i in range(ops)]

    @dg.job
    def chain() -> None:
        value = start()
        for step in steps:
            value = step(value)

    return chain


def timed_run(job: dg.JobDefinition, relayed: bool) -> tuple[float, int]:
    """(seconds, events) of one in-process run on a fresh instance."""
    with tempfile.TemporaryDirectory() as home, open(os.devnull, "w") as devnull:
        yaml_text = relayed_event_log.dagster_yaml() if relayed else "telemetry: {enabled: false}\n"
        Path(home, "dagster.yaml").write_text(yaml_text)
        relayed_event_log.relay_to(
            relay_protocol.DurableLog(str(Path(home, "relay.log")), devnull) if relayed else None
        )
        with DagsterInstance.from_config(home) as instance:
            started = time.perf_counter()
            result = job.execute_in_process(instance=instance)
            elapsed = time.perf_counter() - started
            assert result.success
            return elapsed, len(instance.get_records_for_run(result.run_id, limit=1_000_000).records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the console logger would dominate both
    job = chain_job(args.ops)
    timed_run(job, relayed=True)  # warm-up: imports, schema code paths
    samples: dict[str, list[tuple[float, int]]] = {"on-disk sqlite": [], "relayed in memory": []}
    for _ in range(args.repeat):
        samples["on-disk sqlite"].append(timed_run(job, relayed=False))
        samples["relayed in memory"].append(timed_run(job, relayed=True))
    medians = {name: statistics.median(s[0] for s in runs) for name, runs in samples.items()}
    for name, runs in samples.items():
        events = runs[0][1]
        print(f"{name:<18} {events} events, median {medians[name]:.2f} s, {1000 * medians[name] / events:.2f} ms/event")
    print(f"on-disk / relayed: {medians['on-disk sqlite'] / medians['relayed in memory']:.2f}x; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
