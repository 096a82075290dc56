"""Contract of the sandbox's in-memory, relay-as-stored event log (`relayed_event_log`).

Real Dagster runs (real jobs, real instances from a ``dagster.yaml``), real processes and a real
``kill -9``. The expected events come from Dagster itself: the storage's own records of the run,
and the same job run on Dagster's stock on-disk sqlite storage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterInstance, DagsterRunStatus, deserialize_value
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.dagster_run import DagsterRun

from osiris_dagster.remote import relay_protocol as protocol
from osiris_dagster.remote import relayed_event_log
from osiris_dagster.remote.worker import uses_relayed_event_log
from tests.conftest import REPO
from tests.remote.conftest import dagster_execute, dagster_launch, instance_for, wait_for_run


def _lines(path: Path) -> list[protocol.Line]:
    # Split on "\n" only: str.splitlines also splits on the sentinel's \x1e and \x1f.
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    parsed = [protocol.parse_line(line + "\n") for line in text[:-1].split("\n")]
    assert None not in parsed, "the durable log holds a line that is not a protocol line"
    return parsed  # type: ignore[return-value]


@dg.op
def one() -> int:
    return 1


@dg.op
def plus_one(context, value: int) -> int:  # type: ignore[no-untyped-def]
    context.log.info("adding one")
    return value + 1


@dg.job
def two_steps() -> None:
    plus_one(one())


def _home(path: Path, yaml_text: str) -> Path:
    path.mkdir()
    (path / "dagster.yaml").write_text(yaml_text)
    return path


def test_each_event_is_relayed_once_in_storage_order_and_matches_stock_storage(tmp_path: Path) -> None:
    log_path, stdout_path = tmp_path / "relay.log", tmp_path / "stdout"
    with open(stdout_path, "w", encoding="utf-8") as stdout:
        durable = protocol.DurableLog(str(log_path), stdout)
        relayed_event_log.relay_to(durable)
        try:
            home = _home(tmp_path / "relayed", relayed_event_log.dagster_yaml())
            with DagsterInstance.from_config(str(home)) as instance:
                assert type(instance.event_log_storage) is relayed_event_log.RelayedEventLogStorage
                result = two_steps.execute_in_process(instance=instance)
                assert result.success
                stored = [r.event_log_entry for r in instance.get_records_for_run(result.run_id).records]
                storage_ids = [r.storage_id for r in instance.get_records_for_run(result.run_id).records]
        finally:
            relayed_event_log.relay_to(None)

    lines = _lines(log_path)
    # Printed exactly what the durable log holds; numbered 1..n without gaps; only events.
    assert stdout_path.read_text(encoding="utf-8") == log_path.read_text(encoding="utf-8")
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
    assert {line.kind for line in lines} == {protocol.EVENT}
    # Once each, in storage-id order: the relayed entries are the storage's records, in order.
    relayed = [deserialize_value(line.payload, EventLogEntry) for line in lines]
    assert storage_ids == sorted(storage_ids)
    assert relayed == stored
    assert durable.seq == len(lines)

    # The same job on Dagster's stock on-disk sqlite storage stores the same events.
    with DagsterInstance.from_config(str(_home(tmp_path / "stock", "telemetry: {enabled: false}\n"))) as instance:
        reference = two_steps.execute_in_process(instance=instance)
        expected = Counter(
            r.event_log_entry.dagster_event_type for r in instance.get_records_for_run(reference.run_id).records
        )
    assert Counter(entry.dagster_event_type for entry in relayed) == expected
    assert sum(expected.values()) > 10  # a real run, not an empty comparison


_KILLED_RUN = """\
import sys, time
from pathlib import Path
import dagster as dg
from dagster import DagsterInstance
from osiris_dagster.remote import relay_protocol, relayed_event_log

home, marker = sys.argv[1], Path(sys.argv[2])

@dg.op
def first() -> int:
    return 1

@dg.op
def hangs(context, value: int) -> None:
    context.log.info("about to hang")
    marker.write_text("stored")  # after the log message was stored (and so relayed)
    time.sleep(600)

@dg.job
def job():
    hangs(first())

relayed_event_log.relay_to(relay_protocol.DurableLog(str(Path(home) / "relay.log"), sys.stdout))
with DagsterInstance.from_config(home) as instance:
    job.execute_in_process(instance=instance)
"""


def test_durable_log_holds_every_stored_event_when_the_process_is_killed(tmp_path: Path) -> None:
    home = _home(tmp_path / "home", relayed_event_log.dagster_yaml())
    script, marker = tmp_path / "killed_run.py", tmp_path / "marker"
    script.write_text(_KILLED_RUN)
    process = subprocess.Popen(
        [sys.executable, str(script), str(home), str(marker)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the run ended before reaching its hanging step"
            assert time.monotonic() < deadline, "the run never reached its hanging step"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        printed = process.communicate(timeout=30)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    lines = _lines(home / "relay.log")
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
    # Whatever reached stdout reached the durable log first.
    assert (home / "relay.log").read_text(encoding="utf-8").startswith(printed)
    entries = [deserialize_value(line.payload, EventLogEntry) for line in lines]
    types = [e.dagster_event_type for e in entries]
    # Every event stored before the kill: the first step's whole life, the second's start and its
    # message (stored before the marker was written).
    E = dg.DagsterEventType
    for event_type in (E.RUN_START, E.STEP_START, E.STEP_OUTPUT, E.HANDLED_OUTPUT, E.STEP_SUCCESS, E.LOADED_INPUT):
        assert event_type in types, f"{event_type} missing from the durable log: {types}"
    assert [e.step_key for e in entries if e.dagster_event_type == E.STEP_START] == ["first", "hangs"]
    assert any(e.user_message == "about to hang" for e in entries)
    assert E.RUN_SUCCESS not in types and E.RUN_FAILURE not in types


def test_a_forked_child_and_its_parent_count_on_one_sequence(tmp_path: Path) -> None:
    """The run's process (forked by the worker) relays events; the worker's lines after it continue the count."""
    log_path = tmp_path / "relay.log"
    with open(tmp_path / "stdout", "w", encoding="utf-8") as stdout:
        durable = protocol.DurableLog(str(log_path), stdout)
        durable.control(protocol.STARTED, {})
        child = os.fork()
        if child == 0:
            code = 1
            try:
                durable.keep_stdout()
                durable.coalesce_stdout(0.02)
                os.dup2(2, 1)  # as the worker's child does: its own prints never reach the protocol stream
                durable.emit_many([(protocol.EVENT, "a")])
                # Coalesced: in the durable log at once, on stdout only at the next flush.
                assert log_path.read_text(encoding="utf-8").count("\n") == 2
                durable.emit_many([(protocol.EVENT, "b")])
                durable.flush()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        durable.control(protocol.EXIT, {"code": 0})
    text = log_path.read_text(encoding="utf-8")
    assert [(line.seq, line.kind) for line in _lines(log_path)] == [
        (1, protocol.STARTED),
        (2, protocol.EVENT),
        (3, protocol.EVENT),
        (4, protocol.EXIT),
    ]
    assert (tmp_path / "stdout").read_text(encoding="utf-8") == text


def test_only_single_process_runs_keep_their_events_in_memory() -> None:
    def payload(run_config: dict[str, object]) -> dict[str, str]:
        return {"run": dg.serialize_value(DagsterRun(job_name="j", run_id="r", run_config=run_config))}

    assert uses_relayed_event_log(payload({}))
    assert uses_relayed_event_log(payload({"execution": {"config": {"in_process": {}}}}))
    assert not uses_relayed_event_log(payload({"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}))


TWO_STEPS = """\
oml_version: "0.1.0"
name: reviews-csv
steps:
- id: extract-reviews
  component: sql.extractor
  mode: read
  config: {connection: "@sqlite.movies", query: "SELECT * FROM reviews ORDER BY id"}
- id: write-reviews
  component: filesystem.csv_writer
  mode: write
  needs: [extract-reviews]
  config: {path: output/reviews_two_steps.csv}
"""


@pytest.mark.sandbox
def test_a_multiprocess_remote_run_keeps_the_on_disk_log_and_relays_every_event(
    project: Path, remote_home, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Step processes cannot share an in-memory log: the worker polls the on-disk one, as before."""
    (project / "assets" / "reviews_csv.yaml").write_text(TWO_STEPS)
    output = project / "output" / "reviews_two_steps.csv"
    home, env = remote_home()
    # Expected: the same job run locally (in-process).
    local_run_id = dagster_execute(project, env, job="reviews_csv")
    expected = output.read_bytes()
    output.unlink()
    config = tmp_path / "multiprocess.yaml"
    config.write_text("execution:\n  config:\n    multiprocess:\n      max_concurrent: 2\n")
    run_id = dagster_launch(project, env, job="reviews_csv", extra=("-c", str(config)))
    with instance_for(env) as instance:
        run = wait_for_run(instance, run_id, timeout=300)
        assert run.status == DagsterRunStatus.SUCCESS, (home / "e2b" / run_id / "supervisor.log").read_text()[-3000:]
        counts = Counter(e.dagster_event_type for e in instance.all_logs(run_id))
        local = Counter(e.dagster_event_type for e in instance.all_logs(local_run_id))
    assert output.read_bytes() == expected
    E = dg.DagsterEventType
    for event_type in (E.STEP_START, E.STEP_SUCCESS, E.ASSET_MATERIALIZATION, E.ASSET_CHECK_EVALUATION, E.RUN_SUCCESS):
        assert counts[event_type] == local[event_type], event_type
    assert counts[E.STEP_SUCCESS] == 2
    assert "polled" in (home / "e2b" / run_id / "supervisor.log").read_text()
