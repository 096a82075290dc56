"""One supervision service per DAGSTER_HOME: it survives `kill -9`, is a singleton, idles out, keeps logs apart.

Everything is real: `dagster job launch` as a user types it, the service process the launcher
starts, `kill -9` of it, the real `dagster-daemon` with run monitoring resuming runs through
`E2BRunLauncher.resume_run`, the real e2b SDK against the local sandbox server. Expected event
counts come from the pipeline's definition (its two steps); a doubled event would show as two
events with the same sandbox-set timestamp and message.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from osiris_dagster.remote.run_files import RunFiles
from osiris_dagster.remote.supervision_client import ServicePaths, ping, start_service
from osiris_dagster.remote.tags import SANDBOX_ID_TAG, SUPERVISOR_PID_TAG
from tests.conftest import dagster_bin
from tests.remote.conftest import (
    add_slow_pipeline,
    dagster_launch,
    instance_for,
    wait_for_event,
    wait_for_run,
    write_instance_config,
)
from tests.remote.test_remote_resume import HOST_EVENTS, _event_counts

pytestmark = pytest.mark.sandbox

SERVICE = "osiris_dagster.remote.supervision_service"


def _services(home: Path) -> list[int]:
    """Pids of the live supervision service processes of this DAGSTER_HOME."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and SERVICE.encode() in argv and str(home).encode() in argv:
            found.append(int(entry.name))
    return found


def _launch_at_once(project: Path, env: dict[str, str], count: int, job: str = "movies_to_csv") -> list[str]:
    """``count`` `dagster job launch` processes started together (racing launchers); their run ids."""
    before = {run.run_id for run in instance_for(env).get_runs()}
    command = [dagster_bin(), "job", "launch", "-w", "workspace.yaml", "-j", job]
    launches = [
        subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(count)
    ]
    for launch in launches:
        output = launch.communicate(timeout=240)[0]
        assert launch.returncode == 0, output[-3000:]
    run_ids = [run.run_id for run in instance_for(env).get_runs() if run.run_id not in before]
    assert len(run_ids) == count
    return run_ids


def _assert_every_event_once(instance: Any, run_id: str) -> None:
    """The slow pipeline's events, each once: its 2 steps (from its YAML) and one run start and end."""
    counts = _event_counts(instance, run_id)
    expected = {
        DagsterEventType.RUN_START.value: 1,
        DagsterEventType.RUN_SUCCESS.value: 1,
        DagsterEventType.STEP_START.value: 2,
        DagsterEventType.STEP_SUCCESS.value: 2,
    }
    assert {name: counts[name] for name in expected} == expected, (run_id, counts)
    # A resent event is stored again with the sandbox's timestamp and message: none is.
    keys = [
        (e.timestamp, e.dagster_event_type, e.user_message)
        for e in instance.all_logs(run_id)
        if e.dagster_event_type not in HOST_EVENTS
    ]
    assert len(keys) == len(set(keys)), run_id


def _kill_service_mid_runs(instance: Any, run_ids: list[str]) -> int:
    """`kill -9` of the service while every run is in its (slow) first step."""
    for run_id in run_ids:
        wait_for_event(instance, run_id, "STEP_START", timeout=240)
    runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
    assert not [run.run_id for run in runs if run.is_finished]  # all three in flight
    (pid,) = {run.tags[SUPERVISOR_PID_TAG] for run in runs}
    os.kill(int(pid), signal.SIGKILL)
    return int(pid)


def test_kill_9_of_the_service_with_three_runs_in_flight_resumes_each_through_run_monitoring(  # type: ignore[no-untyped-def]
    tmp_path: Path, project: Path, daemon
) -> None:
    started, env = daemon
    add_slow_pipeline(project)
    instance_for(env).dispose()  # the storage exists before the racing launches (Dagster's own schema race)
    started.start()
    run_ids = _launch_at_once(project, env, 3, job="slow_count")
    instance = instance_for(env)
    killed = _kill_service_mid_runs(instance, run_ids)

    for run_id in run_ids:
        run = wait_for_run(instance, run_id, timeout=300)
        assert run.status == DagsterRunStatus.SUCCESS, instance.all_logs(run_id)[-1]
        assert int(run.tags[SUPERVISOR_PID_TAG]) != killed  # a new service finished it
        _assert_every_event_once(instance, run_id)
    assert not list(ServicePaths.for_home(env["DAGSTER_HOME"]).spool.iterdir())


def test_kill_9_of_the_service_without_run_monitoring_the_next_service_picks_the_runs_up(  # type: ignore[no-untyped-def]
    tmp_path: Path, project: Path, remote_home
) -> None:
    _, env = remote_home()
    add_slow_pipeline(project)
    run_ids = _launch_at_once(project, env, 3, job="slow_count")
    instance = instance_for(env)
    killed = _kill_service_mid_runs(instance, run_ids)
    time.sleep(1)
    assert all(instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED for run_id in run_ids)

    # No daemon: the next launch starts a service, which takes the spooled runs up again.
    run_ids.append(dagster_launch(project, env, job="slow_count"))
    for run_id in run_ids:
        run = wait_for_run(instance, run_id, timeout=300)
        assert run.status == DagsterRunStatus.SUCCESS, instance.all_logs(run_id)[-1]
        assert int(run.tags[SUPERVISOR_PID_TAG]) != killed
        _assert_every_event_once(instance, run_id)


def test_services_started_at_once_and_two_launchers_at_once_make_one_service(project: Path, remote_home) -> None:  # type: ignore[no-untyped-def]
    home, env = remote_home()
    assert not _services(home)
    # Three services started at the same moment, as racing launchers start them: one wins the lock.
    paths = ServicePaths.for_home(home)
    paths.root.mkdir(parents=True)
    started = [start_service(paths, idle_s=60) for _ in range(3)]
    deadline = time.monotonic() + 60
    while sum(process.poll() is None for process in started) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    (winner,) = [process.pid for process in started if process.poll() is None]
    assert [process.returncode for process in started if process.pid != winner] == [0, 0]

    # Two launchers at once: both runs go to that one service.
    _launch_at_once(project, env, 2)
    instance = instance_for(env)
    runs = instance.get_runs()
    assert {int(run.tags[SUPERVISOR_PID_TAG]) for run in runs} == {winner}
    assert _services(home) == [winner]
    for run in runs:
        assert wait_for_run(instance, run.run_id, timeout=240).status == DagsterRunStatus.SUCCESS


def test_the_service_exits_when_idle_and_the_next_launch_starts_another(project: Path, remote_home) -> None:  # type: ignore[no-untyped-def]
    home, env = remote_home(supervision_idle_s=2)
    instance = instance_for(env)
    first = dagster_launch(project, env)
    assert wait_for_run(instance, first, timeout=240).status == DagsterRunStatus.SUCCESS
    pid = int(instance.get_run_by_id(first).tags[SUPERVISOR_PID_TAG])
    deadline = time.monotonic() + 30
    while _services(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _services(home)
    # It let go of the service lock on its way out.
    with open(ServicePaths.for_home(home).lock, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    second = dagster_launch(project, env)
    assert wait_for_run(instance, second, timeout=240).status == DagsterRunStatus.SUCCESS
    assert int(instance.get_run_by_id(second).tags[SUPERVISOR_PID_TAG]) != pid


def test_two_runs_at_once_each_log_only_their_own_lines(project: Path, remote_home) -> None:  # type: ignore[no-untyped-def]
    home, env = remote_home()
    instance = instance_for(env)
    run_ids = [dagster_launch(project, env) for _ in range(2)]
    runs = [wait_for_run(instance, run_id, timeout=240) for run_id in run_ids]
    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 2
    assert runs[0].tags[SUPERVISOR_PID_TAG] == runs[1].tags[SUPERVISOR_PID_TAG]  # one service, two threads
    for run, other in ((runs[0], runs[1]), (runs[1], runs[0])):
        text = RunFiles.for_run(home, run.run_id).log.read_text()
        assert f"sandbox {run.tags[SANDBOX_ID_TAG]} created" in text
        assert "worker started in sandbox" in text and "host instance ready" in text
        assert other.tags[SANDBOX_ID_TAG] not in text and other.run_id not in text
        for event in instance.all_logs(run.run_id):
            assert other.tags[SANDBOX_ID_TAG] not in (event.user_message or ""), event
    service_log = ServicePaths.for_home(home).log.read_text()
    assert all(run.tags[SANDBOX_ID_TAG] not in service_log for run in runs)


# -- the resident service: started when a process loads the launcher, up while such a process lives --

_HOLDER = """
import sys, time
from dagster import DagsterInstance

# Loaded and disposed at once, as a code server does at each reaper evaluation: the claim is the
# process's, so the service stays while the process lives, not while one instance does.
with DagsterInstance.from_config(sys.argv[1]) as instance:
    instance.run_launcher  # Dagster loads the launcher here (register_instance)
print("loaded", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold_launcher(env: dict[str, str], seconds: float) -> subprocess.Popen[bytes]:
    """A process that loads the launcher of the home and lives ``seconds`` (a daemon, in small)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, env["DAGSTER_HOME"], str(seconds)], env=env, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"loaded\n"
    return holder


def _wait_for_services(home: Path, count: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(services := _services(home)) != count and time.monotonic() < deadline:
        time.sleep(0.1)
    return services


def test_loading_the_launcher_starts_the_service_and_it_exits_within_its_idle_rule_after_the_loader(
    remote_home,  # type: ignore[no-untyped-def]
) -> None:
    home, env = remote_home(supervision_idle_s=1)
    holder = _hold_launcher(env, seconds=6)
    (service,) = _wait_for_services(home, 1, timeout=30)  # started at load, before any launch
    time.sleep(3)  # well past supervision_idle_s: it stays, a process holding the launcher lives
    assert _services(home) == [service]
    assert holder.wait(timeout=30) == 0
    # No launcher left and no run: gone within supervision_idle_s (+ its half-second tick).
    assert _wait_for_services(home, 0, timeout=10) == []
    assert "no run for 1 s and no live launcher" in ServicePaths.for_home(home).log.read_text()


def test_kill_9_of_the_process_holding_the_launcher_leaves_no_service(remote_home) -> None:  # type: ignore[no-untyped-def]
    home, env = remote_home(supervision_idle_s=1)
    holder = _hold_launcher(env, seconds=600)
    _wait_for_services(home, 1, timeout=30)
    holder.kill()  # the kernel drops its shared lock: a dead launcher keeps nothing alive
    holder.wait()
    assert _wait_for_services(home, 0, timeout=10) == []


def test_launchers_loaded_at_once_make_one_service_which_takes_up_their_runs(project: Path, remote_home) -> None:  # type: ignore[no-untyped-def]
    home, env = remote_home(supervision_idle_s=1)
    # The instance's storage exists, as it does wherever a daemon runs: three processes creating a
    # fresh sqlite instance at the same moment race in Dagster's own schema creation.
    instance_for(env).dispose()
    holders = [
        subprocess.Popen([sys.executable, "-c", _HOLDER, env["DAGSTER_HOME"], "600"], env=env, stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline() == b"loaded\n"
        # Each may have started one (none answered yet); the losers of the service lock exit.
        (service,) = _wait_for_services(home, 1, timeout=60)
        warm = ServicePaths.for_home(home).log
        deadline = time.monotonic() + 60
        while "warm-up:" not in warm.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        run_ids = _launch_at_once(project, env, 2)
        instance = instance_for(env)
        for run_id in run_ids:
            run = wait_for_run(instance, run_id, timeout=240)
            assert run.status == DagsterRunStatus.SUCCESS
            assert int(run.tags[SUPERVISOR_PID_TAG]) == service  # the prewarmed service supervised it
            log = RunFiles.for_run(home, run_id).log.read_text()
            assert "from the spool" not in ServicePaths.for_home(home).log.read_text()  # handed over, not picked up
            assert "supervisor up" in log
        assert _services(home) == [service]
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    assert _wait_for_services(home, 0, timeout=10) == []


def test_a_run_supervises_without_importing_dagster_until_its_sandbox_exists() -> None:
    """The modules a run uses before its worker starts: e2b only, so a fresh service creates the sandbox at once.

    Nor the product's spec stack (`job_needs`, the launcher): the launcher works the run's needs
    and versions out and puts them in the spec.
    """
    from osiris_dagster.remote.supervision_service import _DAGSTER_SIDE, _SDK_SIDE

    code = (
        "import sys\n"
        f"for name in {_SDK_SIDE!r}: __import__(name)\n"
        "print('dagster' in sys.modules)\n"
        f"for name in {_DAGSTER_SIDE!r}: __import__(name)\n"
        "print([m for m in sys.modules if m.startswith(('osiris_dagster.spec', 'osiris_dagster.components'))\n"
        "       or m in ('osiris_dagster.remote.job_needs', 'osiris_dagster.remote.launcher')])\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output == "False\n[]\n"


def test_after_its_warm_up_a_full_collection_no_longer_walks_the_imported_modules(tmp_path: Path) -> None:
    """A full collection in the service holds the GIL, so every run's relay waits for it: the
    warm-up freezes what it imported, and a collection walks only what runs allocate later."""
    code = (
        "import gc, sys, time\n"
        "from pathlib import Path\n"
        "from osiris_dagster.remote.supervision_service import _WarmUp\n"
        "warm_up = _WarmUp()\n"
        "warm_up.start(Path(sys.argv[1]))\n"
        "assert warm_up.dagster.wait(120)\n"
        "time.sleep(0.5)  # the warm-up thread logs after setting the event\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()), 'dagster' in sys.modules)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.split()
    frozen, tracked, dagster_loaded = int(output[0]), int(output[1]), output[2]
    assert dagster_loaded == "True"
    assert frozen > 100_000  # Dagster, SQLAlchemy, the e2b SDK: out of the collector's reach
    assert tracked < frozen // 20  # what a full collection still walks


def test_the_services_engine_events_read_as_the_launchers() -> None:
    from osiris_dagster.remote.launcher import E2BRunLauncher
    from osiris_dagster.remote.supervisor import LAUNCHER_NAME

    assert E2BRunLauncher.__name__ == LAUNCHER_NAME


def test_a_resident_service_uses_the_api_key_of_each_launch_not_of_whoever_started_it(  # type: ignore[no-untyped-def]
    tmp_path: Path, project: Path, clean_env: dict[str, str]
) -> None:
    """An API key rotated while the service lives reaches the next launch.

    The service outlives any one daemon, webserver or code server (it idles out only when none is
    left), so restarting them one by one with a new key leaves it running under the old one. The
    server here accepts only the new key and answers the old one 401, as E2B does.
    """
    from e2b import Sandbox
    from e2b.exceptions import AuthenticationException

    from osiris_dagster.sandbox_server import LocalSandboxServer

    with LocalSandboxServer(
        port=0, base_dir=tmp_path / "sandboxes", extra_path=[str(Path(sys.executable).parent)], api_keys=["e2b_new"]
    ) as server:
        home = write_instance_config(Path(clean_env["DAGSTER_HOME"]), server)
        with pytest.raises(AuthenticationException):  # the server really refuses the revoked key
            Sandbox.create(**{**server.sdk_kwargs(), "api_key": "e2b_revoked"})
        # The resident service, started earlier by a process that had the key of the time.
        paths = ServicePaths.for_home(home)
        paths.root.mkdir(parents=True)
        service = subprocess.Popen(
            [sys.executable, "-m", SERVICE, str(home), "--idle-s", "120"],
            env={**clean_env, "E2B_API_KEY": "e2b_revoked"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while ping(paths) != service.pid and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ping(paths) == service.pid

            run_id = dagster_launch(project, {**clean_env, "E2B_API_KEY": "e2b_new"})
            instance = instance_for(clean_env)
            run = wait_for_run(instance, run_id, timeout=240)
            assert int(run.tags[SUPERVISOR_PID_TAG]) == service.pid  # supervised by the old service
            assert run.status == DagsterRunStatus.SUCCESS, instance.all_logs(run_id)[-1]
            assert (project / "output" / "actors.csv").is_file()
        finally:
            service.kill()
            service.wait()
