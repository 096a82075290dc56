"""A remote run survives its host: lost supervisor, lost daemon, dropped streams; SUCCESS means done.

Everything is real: `kill -9` of real processes, the real `dagster-daemon` with run monitoring
resuming the run through `E2BRunLauncher.resume_run`, the real e2b SDK against the local sandbox
server. Expected values come from a local run of the same job (`dagster job execute`): its event
counts per type, its output files, its session (parity).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterRunStatus
from e2b import Sandbox

from osiris_dagster.remote.result_archive import output_paths
from osiris_dagster.remote.tags import SANDBOX_ID_TAG, SUPERVISOR_PID_TAG
from osiris_dagster.sandbox_server import LocalSandboxServer
from osiris_dagster.session.parity import compare_sessions
from osiris_dagster.session.reader import SessionRecord
from tests.conftest import REPO
from tests.remote.conftest import (
    add_slow_pipeline,
    dagster_execute,
    dagster_launch,
    instance_for,
    wait_for_event,
    wait_for_run,
    write_instance_config,
)

pytestmark = pytest.mark.sandbox

# Events the host adds itself (launch, supervision, resume): not the sandbox's, not compared.
HOST_EVENTS = {DagsterEventType.ENGINE_EVENT, DagsterEventType.RUN_STARTING, DagsterEventType.RUN_ENQUEUED}
# `dagster job execute` initializes resources twice where `dagster api execute_run` (the sandbox's
# worker, and any launched run) does once: a difference of entry point, not of the relay.
ENTRY_POINT_EVENTS = {DagsterEventType.RESOURCE_INIT_STARTED, DagsterEventType.RESOURCE_INIT_SUCCESS}


def _event_counts(instance: Any, run_id: str) -> Counter[str]:
    return Counter(
        e.dagster_event_type.value
        for e in instance.all_logs(run_id)
        if e.dagster_event_type and e.dagster_event_type not in HOST_EVENTS | ENTRY_POINT_EVENTS
    )


def _kill_supervisor(instance: Any, run_id: str) -> int:
    pid = int(instance.get_run_by_id(run_id).tags[SUPERVISOR_PID_TAG])
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.parametrize("lost", ["supervisor", "supervisor and daemon"])
def test_run_whose_supervisor_is_killed_resumes_and_ends_with_every_event_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, project: Path, daemon, lost: str
) -> None:
    started, env = daemon
    local_project = tmp_path / "local"
    local_project.mkdir()
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, local_project / name)
    shutil.copy(REPO / "workspace.yaml", local_project / "workspace.yaml")
    local_id = dagster_execute(local_project, env)
    started.start()
    run_id = dagster_launch(project, env)
    instance = instance_for(env)
    wait_for_event(instance, run_id, "STEP_START", timeout=120)
    killed = _kill_supervisor(instance, run_id)
    if lost == "supervisor and daemon":
        started.kill()
        time.sleep(1)
        started.start()

    run = wait_for_run(instance, run_id, timeout=240)
    assert run.status == DagsterRunStatus.SUCCESS, instance.all_logs(run_id)[-1]
    assert int(run.tags[SUPERVISOR_PID_TAG]) != killed  # a new supervisor finished it
    # Every event of the sandbox's run exactly once: the same counts per type as the local run,
    # and no event stored twice (an event's timestamp and message are set in the sandbox).
    assert _event_counts(instance, run_id) == _event_counts(instance, local_id)
    keys = [
        (e.timestamp, e.dagster_event_type, e.user_message)
        for e in instance.all_logs(run_id)
        if e.dagster_event_type not in HOST_EVENTS
    ]
    assert len(keys) == len(set(keys))
    # Outputs, metrics and the session: parity with the local run, remote-only records once each.
    local_session = local_project / "logs" / f"run_{local_id}"
    remote_session = project / "logs" / f"run_{run_id}"
    report = compare_sessions(local_session, remote_session)
    assert report.ok, report.render()
    remote = SessionRecord.read(remote_session)
    counts = remote.event_counts()
    assert counts["sandbox_killed"] == 1 and counts["artifacts_downloaded"] == 1 and counts["dependency_check"] == 1
    assert Counter(m["metric"] for m in remote.metrics)["e2b_overhead_ms"] == 1


def test_run_whose_supervisor_and_sandbox_are_both_lost_fails_saying_why(  # type: ignore[no-untyped-def]
    project: Path, daemon, sandbox_server
) -> None:
    started, env = daemon
    add_slow_pipeline(project)
    started.start()
    run_id = dagster_launch(project, env, job="slow_count")
    instance = instance_for(env)
    wait_for_event(instance, run_id, "STEP_START", timeout=120)
    _kill_supervisor(instance, run_id)
    sandbox_id = instance.get_run_by_id(run_id).tags[SANDBOX_ID_TAG]
    assert Sandbox.kill(sandbox_id, **sandbox_server.sdk_kwargs())

    run = wait_for_run(instance, run_id, timeout=180)
    assert run.status == DagsterRunStatus.FAILURE
    failure = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)[-1]
    assert sandbox_id in failure.message and "gone" in failure.message


def test_a_run_that_reads_success_has_its_outputs_and_complete_session(project: Path, remote_home) -> None:  # type: ignore[no-untyped-def]
    _, env = remote_home()
    run_id = dagster_launch(project, env)
    instance = instance_for(env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            break
        time.sleep(0.01)
    # The very first read of SUCCESS: the files and the whole session are already there.
    assert run.status == DagsterRunStatus.SUCCESS
    session = SessionRecord.read(project / "logs" / f"run_{run_id}")
    assert session.status["ok"] is True
    assert session.event_counts()["sandbox_killed"] == 1
    assert "e2b_overhead_ms" in {m["metric"] for m in session.metrics}
    outputs = output_paths(project / "logs" / f"run_{run_id}" / "events.jsonl")
    assert outputs and all((project / path).is_file() for path in outputs)
    assert sorted(p.name for p in (project / "output").glob("*.csv")) == [
        "actors.csv",
        "directors.csv",
        "movie_actors.csv",
        "movies.csv",
        "reviews.csv",
    ]


def test_runs_succeed_through_dropped_streams_and_transfers_with_no_event_lost_or_doubled(
    tmp_path: Path, project: Path, clean_env: dict[str, str]
) -> None:
    # A server of its own: a fault plan drops the next transfers of ANY sandbox of its server, and
    # in the whole suite the shared server's other sandboxes (earlier tests' runs, still copying
    # back or being reaped) took the file drops meant for this run.
    with LocalSandboxServer(
        port=0, base_dir=tmp_path / "sandboxes", extra_path=[str(Path(sys.executable).parent)]
    ) as server:
        write_instance_config(Path(clean_env["DAGSTER_HOME"]), server)
        _through_faults(tmp_path, project, clean_env, server)


def _through_faults(tmp_path: Path, project: Path, env: dict[str, str], sandbox_server: LocalSandboxServer) -> None:
    local_project = tmp_path / "local"
    local_project.mkdir()
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, local_project / name)
    local_id = dagster_execute(local_project, env)
    # First every command stream is reset (up to 3), then every file transfer (up to 3: below the
    # supervisor's 5 attempts per transfer, so a retrying client gets through).
    streams = sandbox_server.set_faults("drop=streams,every=1,after=1,max=3,cut=2,seed=3")
    try:
        run_id = dagster_launch(project, env)
        instance = instance_for(env)
        deadline = time.monotonic() + 120
        while not streams.drops and time.monotonic() < deadline:
            time.sleep(0.05)
        files = sandbox_server.set_faults("drop=files,every=1,max=3,seed=3")
        run = wait_for_run(instance, run_id, timeout=240)
    finally:
        sandbox_server.set_faults(None)
    sandbox_id = run.tags[SANDBOX_ID_TAG]
    drops = [d for d in streams.drops + files.drops if d.sandbox_id == sandbox_id]
    kinds = Counter(drop.kind for drop in drops)
    assert kinds["stream"] >= 1 and kinds["download"] >= 1, drops
    assert run.status == DagsterRunStatus.SUCCESS, instance.all_logs(run_id)[-1]
    assert _event_counts(instance, run_id) == _event_counts(instance, local_id)
    keys = [(e.timestamp, e.dagster_event_type, e.user_message) for e in instance.all_logs(run_id)]
    assert len(keys) == len(set(keys))
    report = compare_sessions(local_project / "logs" / f"run_{local_id}", project / "logs" / f"run_{run_id}")
    assert report.ok, report.render()
