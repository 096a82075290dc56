"""No leaked sandboxes: after a lost supervisor, a finished or deleted run, or a vanished server,
no sandbox and no worker process remains.

The run's job waits in MariaDB (``SELECT SLEEP(n)``): it is still executing, idle, when the fault
hits, so "no worker left" means the kill ended it, not that it had finished. Worker processes
are found independently of the server's bookkeeping: by the ``OSIRIS_SANDBOX_ID`` the supervisor
puts in the worker command's environment, read from /proc. The reaper is the real sensor
function the daemon evaluates every `REAP_INTERVAL_S`; one evaluation is "one interval".
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus, build_sensor_context
from e2b import Sandbox

from osiris_dagster.remote.launcher import E2BRunLauncher, _supervisor_pid
from osiris_dagster.remote.sandbox_reaper import e2b_sandbox_reaper
from osiris_dagster.remote.tags import SANDBOX_ID_TAG
from osiris_dagster.sandbox_server import LocalSandboxServer
from osiris_dagster.session.reader import SessionRecord
from tests.remote.conftest import dagster_launch, instance_for, wait_for_event, wait_for_run, write_instance_config

pytestmark = [pytest.mark.sandbox, pytest.mark.mariadb]

SLEEPY = """\
oml_version: "0.1.0"
name: sleepy
description: Waits in MariaDB (no CPU), so the run is still executing when a fault hits it.
steps:
- id: extract-sleep
  component: sql.extractor
  mode: read
  config: {{connection: "@mysql.movies", query: "SELECT SLEEP({seconds}) AS slept"}}
- id: write-sleep
  component: filesystem.csv_writer
  mode: write
  needs: ["extract-sleep"]
  config: {{path: output/slept.csv}}
"""


def add_sleepy_pipeline(project: Path, seconds: int = 120) -> None:
    (project / "assets" / "sleepy.yaml").write_text(SLEEPY.format(seconds=seconds))


def worker_pids(sandbox_id: str) -> set[int]:
    """Live processes whose environment carries this sandbox's id (the worker and its children)."""
    marker = f"OSIRIS_SANDBOX_ID={sandbox_id}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as stat:
                if stat.read().rpartition(b")")[2].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        found.add(int(entry))
    return found


def wait_no_workers(sandbox_id: str, timeout: float = 10) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := worker_pids(sandbox_id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def listed(server: LocalSandboxServer) -> set[str]:
    return {s.sandbox_id for s in Sandbox.list(**server.sdk_kwargs()).next_items()}


def kill_supervisor(instance, run_id: str) -> None:  # type: ignore[no-untyped-def]
    pid = _supervisor_pid(instance.get_run_by_id(run_id))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                if stat.read().rpartition(b")")[2].split()[0] == b"Z":
                    break
        except OSError:
            break
        time.sleep(0.05)


def started_sleepy_run(project: Path, env: dict[str, str]) -> tuple[str, str]:
    """Launch `sleepy`, wait until its step runs; (run id, sandbox id), its worker alive."""
    run_id = dagster_launch(project, env, job="sleepy")
    with instance_for(env) as instance:
        wait_for_event(instance, run_id, "STEP_START", timeout=90)
        sandbox_id = instance.get_run_by_id(run_id).tags[SANDBOX_ID_TAG]
    assert worker_pids(sandbox_id), "the worker should be running"
    return run_id, sandbox_id


def engine_messages(instance, run_id: str) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(e.message or "" for e in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT))


def test_reaper_keeps_live_runs_and_kills_sandboxes_of_finished_and_unknown_runs(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server, mariadb_database: str
) -> None:
    add_sleepy_pipeline(project)
    _, env = remote_home()
    env = {**env, "MYSQL_DATABASE": mariadb_database}
    failed_run, failed_sandbox = started_sleepy_run(project, env)
    deleted_run, deleted_sandbox = started_sleepy_run(project, env)
    with instance_for(env) as instance:
        for run_id in (failed_run, deleted_run):
            kill_supervisor(instance, run_id)  # the supervisor is lost: nobody will kill the sandbox

        e2b_sandbox_reaper(build_sensor_context(instance=instance))
        assert {failed_sandbox, deleted_sandbox} <= listed(sandbox_server)  # runs still STARTED: kept

        # What run monitoring does to a run whose worker is lost; and a run deleted by a user.
        instance.report_run_failed(instance.get_run_by_id(failed_run), "supervisor lost")
        instance.delete_run(deleted_run)
        result = e2b_sandbox_reaper(build_sensor_context(instance=instance))
        assert "sandboxes killed: 2," in (result.skip_message or "")

        assert not {failed_sandbox, deleted_sandbox} & listed(sandbox_server)
        assert wait_no_workers(failed_sandbox) == set()
        assert wait_no_workers(deleted_sandbox) == set()
        assert f"Reaper: Sandbox {failed_sandbox} killed (its run is FAILURE)" in engine_messages(instance, failed_run)


def test_terminate_kills_the_sandbox_of_a_finished_run(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server, mariadb_database: str
) -> None:
    add_sleepy_pipeline(project)
    _, env = remote_home()
    env = {**env, "MYSQL_DATABASE": mariadb_database}
    run_id, sandbox_id = started_sleepy_run(project, env)
    with instance_for(env) as instance:
        kill_supervisor(instance, run_id)
        instance.report_run_failed(instance.get_run_by_id(run_id), "supervisor lost")
        launcher = instance.run_launcher
        assert isinstance(launcher, E2BRunLauncher)
        assert launcher.terminate(run_id) is True
        assert sandbox_id not in listed(sandbox_server)
        assert wait_no_workers(sandbox_id) == set()
        assert f"Sandbox {sandbox_id} killed" in engine_messages(instance, run_id)
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE  # not rewritten


def test_a_vanished_server_leaves_no_worker_and_no_false_kill_record(  # type: ignore[no-untyped-def]
    project: Path, clean_env: dict[str, str], tmp_path: Path, mariadb_database: str
) -> None:
    add_sleepy_pipeline(project)
    env = {**clean_env, "MYSQL_DATABASE": mariadb_database}
    server = LocalSandboxServer(port=0, base_dir=tmp_path, extra_path=[str(Path(sys.executable).parent)], faults="")
    server.start()
    try:
        write_instance_config(Path(env["DAGSTER_HOME"]), server)
        run_id, sandbox_id = started_sleepy_run(project, env)
    finally:
        server.stop()  # the server goes away with every sandbox (as a host losing E2B would see it)
    assert wait_no_workers(sandbox_id) == set()
    with instance_for(env) as instance:
        # The supervisor cannot tell a vanished service from a network outage and keeps trying to
        # reattach (minutes); a terminate makes it give up and kill - which must fail, and say so.
        launcher = instance.run_launcher
        assert isinstance(launcher, E2BRunLauncher)
        launcher.terminate(run_id)
        run = wait_for_run(instance, run_id, timeout=120)
        assert run.is_finished and run.status != DagsterRunStatus.SUCCESS
        messages = engine_messages(instance, run_id)
        assert f"Could not kill sandbox {sandbox_id}" in messages
        assert f"Sandbox {sandbox_id} killed" not in messages
    session = SessionRecord.read(project / "logs" / f"run_{run_id}")
    assert "sandbox_killed" not in session.event_counts()


def test_a_run_longer_than_the_sandbox_timeout_succeeds(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server, mariadb_database: str
) -> None:
    add_sleepy_pipeline(project, seconds=14)
    _, env = remote_home(sandbox_timeout_s=6)
    env = {**env, "MYSQL_DATABASE": mariadb_database}
    run_id = dagster_launch(project, env, job="sleepy")
    with instance_for(env) as instance:
        run = wait_for_run(instance, run_id, timeout=120)
        assert run.status == DagsterRunStatus.SUCCESS, engine_messages(instance, run_id)
        stats = instance.get_run_stats(run_id)
        assert stats.end_time - stats.start_time > 14  # the sandbox lived > 2x its timeout
    assert (project / "output" / "slept.csv").read_text().splitlines() == ["slept", "0"]
