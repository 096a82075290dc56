"""Fixtures for remote runs: the local sandbox server and a DAGSTER_HOME with the E2B launcher.

Everything is real: the `e2b` SDK talks HTTP to `LocalSandboxServer`, Dagster runs with a sqlite
instance, the supervision service and the worker are real processes. The sandbox interpreter is this
venv's Python (the server puts its directory on the sandbox PATH).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance

from osiris_dagster.sandbox_server import LocalSandboxServer
from tests.conftest import add_counting_pipeline, dagster_bin


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSandboxServer]:
    base = tmp_path_factory.mktemp("sandboxes")
    # The default network: isolated when the kernel allows it (CI runs as root), so a run reaches the
    # test databases only at ``server.host_address`` (MYSQL_HOST and the like), never at 127.0.0.1.
    with LocalSandboxServer(
        port=0, base_dir=base, extra_path=[str(Path(sys.executable).parent)], forward=[3306, 5432]
    ) as server:
        yield server


def write_instance_config(home: Path, server: LocalSandboxServer, *, queued: bool = False, **launcher: Any) -> Path:
    config: dict[str, Any] = {
        "run_launcher": {
            "module": "osiris_dagster.remote.launcher",
            "class": "E2BRunLauncher",
            "config": {
                "backend": "local",
                "server_url": server.url,
                "python": sys.executable,
                **launcher,
            },
        },
        "telemetry": {"enabled": False},
    }
    if not queued:
        config["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@pytest.fixture
def remote_home(
    clean_env: dict[str, str], sandbox_server: LocalSandboxServer
) -> Callable[..., tuple[Path, dict[str, str]]]:
    """Configure the launcher in the test's DAGSTER_HOME; returns (home, env for subprocesses).

    The env points MySQL connections at the address sandboxes reach the host at (the profiles read
    ``MYSQL_HOST``): with an isolated sandbox network, 127.0.0.1 is the sandbox itself.
    """

    def configure(**launcher: Any) -> tuple[Path, dict[str, str]]:
        home = write_instance_config(Path(clean_env["DAGSTER_HOME"]), sandbox_server, **launcher)
        return home, {**clean_env, "MYSQL_HOST": sandbox_server.host_address}

    return configure


def _enable_run_monitoring(home: Path) -> None:
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["run_monitoring"] = {"enabled": True, "poll_interval_seconds": 1, "max_resume_run_attempts": 3}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


class _Daemon:
    """`dagster-daemon run` in its own session, killable with -9 like any host process."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self._project, self._env = project, env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(Path(self._env["DAGSTER_HOME"]) / "daemon.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=self._project,
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def daemon(project: Path, remote_home) -> Iterator[tuple[_Daemon, dict[str, str]]]:  # type: ignore[no-untyped-def]
    home, env = remote_home()
    _enable_run_monitoring(home)
    started = _Daemon(project, env)
    try:
        yield started, env
    finally:
        started.kill()


def add_slow_pipeline(project: Path) -> None:
    """Job ``slow_count``: a run that lasts a few seconds (`tests.conftest.add_counting_pipeline`)."""
    add_counting_pipeline(project, "slow-count", 40_000_000)


def dagster_launch(project: Path, env: dict[str, str], job: str = "movies_to_csv", extra: tuple[str, ...] = ()) -> str:
    """`dagster job launch` as a user types it; returns the new run's id."""
    before = _run_ids(env)
    result = subprocess.run(
        [dagster_bin(), "job", "launch", "-w", "workspace.yaml", "-j", job, *extra],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_id,) = _run_ids(env) - before
    return run_id


def dagster_execute(project: Path, env: dict[str, str], job: str = "movies_to_csv") -> str:
    """The same job run locally, in-process (`dagster job execute`); returns its run id."""
    before = _run_ids(env)
    result = subprocess.run(
        [dagster_bin(), "job", "execute", "-m", "osiris_dagster.definitions", "-a", "defs", "-j", job],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_id,) = _run_ids(env) - before
    return run_id


def instance_for(env: dict[str, str]) -> DagsterInstance:
    return DagsterInstance.from_config(env["DAGSTER_HOME"])


def _run_ids(env: dict[str, str]) -> set[str]:
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return {run.run_id for run in instance.get_runs()}


def wait_for_run(instance: DagsterInstance, run_id: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished and not supervisor_alive(instance, run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {timeout} s: {instance.get_run_by_id(run_id)}")


def wait_for_event(instance: DagsterInstance, run_id: str, event_type: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.dagster_event_type and e.dagster_event_type.value == event_type for e in instance.all_logs(run_id)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {event_type} in run {run_id} within {timeout} s")


def supervisor_alive(instance: DagsterInstance, run: Any) -> bool:
    """Is the run still supervised (its supervision lock held by the service's thread for it)?"""
    from osiris_dagster.remote.launcher import is_supervised

    return is_supervised(instance.root_directory, run.run_id)


def bytes_containing(needle: str, *roots: Path) -> list[Path]:
    data = needle.encode()
    return [
        p for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink() and data in p.read_bytes()
    ]
