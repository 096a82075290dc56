"""The production instance of docs/deploy.md, run as deployed: PostgreSQL storage, the queue, run
monitoring, the E2B launcher; code server, daemon and webserver as three separate processes.

The instance is `examples/production/dagster.yaml` itself, with only the launcher pointed at the
local sandbox server and the storage at a scratch PostgreSQL database. Runs are submitted through
the webserver's GraphQL API, the UI's path, so they go through the queue and are launched by the
daemon. Representative part of the remote suite: remote-vs-local parity (the check of
`test_remote_run_matches_local_run_byte_for_byte`), then 20 concurrent remote runs.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from e2b import Sandbox

from osiris_dagster.remote.tags import SANDBOX_ID_TAG
from osiris_dagster.sandbox_server import LocalSandboxServer
from osiris_dagster.session.reader import SessionRecord
from tests.conftest import REPO, dagster_bin, run_cli

pytestmark = [pytest.mark.sandbox, pytest.mark.postgres, pytest.mark.e2e]

EXAMPLE = REPO / "examples" / "production" / "dagster.yaml"
LOCATION = "osiris_dagster"
CONCURRENT_RUNS = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not up within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def production(
    project: Path,
    clean_env: dict[str, str],
    postgres_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[DagsterGraphQLClient, dict[str, str], LocalSandboxServer]]:
    """The example instance on a scratch database, its three processes started, torn down after."""
    home = Path(clean_env["DAGSTER_HOME"])
    config = yaml.safe_load(EXAMPLE.read_text())
    venv_bin = str(Path(sys.executable).parent)
    with LocalSandboxServer(port=0, base_dir=tmp_path, extra_path=[venv_bin], faults="") as server:
        launcher = config["run_launcher"]["config"]
        launcher.pop("template")
        launcher.update(backend="local", server_url=server.url, python=sys.executable)
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        env = {
            **clean_env,
            "DAGSTER_PG_URL": f"postgresql+psycopg2://postgres:trust-auth-ignores-it@127.0.0.1:5432/{postgres_database}",
        }
        for name, value in env.items():  # this process reads the instance too
            if name.startswith("DAGSTER_PG_"):
                monkeypatch.setenv(name, value)
        grpc_port, web_port = _free_port(), _free_port()
        (project / "workspace.grpc.yaml").write_text(
            yaml.safe_dump(
                {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}}]}
            )
        )
        commands = {
            "code-server": [dagster_bin(), "code-server", "start", "-h", "127.0.0.1", "-p", str(grpc_port),
                            "-m", "osiris_dagster.definitions", "-a", "defs"],
            "daemon": [_bin("dagster-daemon"), "run", "-w", "workspace.grpc.yaml"],
            "webserver": [_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                          "-w", "workspace.grpc.yaml"],
        }  # fmt: skip
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for name, command in commands.items():
                log = (tmp_path / f"{name}.log").open("wb")
                processes.append(
                    subprocess.Popen(command, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
                )  # fmt: skip
                if name == "code-server":
                    time.sleep(0.5)
            _wait_http(f"http://127.0.0.1:{web_port}/server_info", 180, processes[2], tmp_path / "webserver.log")
            client = DagsterGraphQLClient("127.0.0.1", port_number=web_port, timeout=120)
            yield client, env, server
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def _submit(client: DagsterGraphQLClient, job: str = "movies_to_csv") -> str:
    deadline = time.monotonic() + 120
    while True:  # the code location may still be loading in the webserver
        try:
            return client.submit_job_execution(job, repository_location_name=LOCATION, repository_name="__repository__")
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _wait_finished(instance: DagsterInstance, run_ids: list[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {run_id: instance.get_run_by_id(run_id) for run_id in run_ids}
        if all(run is not None and run.is_finished for run in runs.values()):
            return runs
        time.sleep(1)
    pending = {run_id: run.status.value for run_id, run in runs.items() if run is None or not run.is_finished}
    raise AssertionError(f"runs not finished within {timeout} s: {pending}")


def _recorded_outputs(project: Path, run_id: str) -> dict[str, str]:
    """{output path: sha256} as the run's session log recorded them when it wrote them."""
    record = SessionRecord.read(project / "logs" / f"run_{run_id}")
    return {
        event["path"]: event["sha256"]
        for event in record.events
        if event["event"] == "artifact_created" and event.get("artifact_type") == "output"
    }


def _wait_supervisors_gone(home: Path, run_ids: list[str], timeout: float = 60) -> None:
    from osiris_dagster.remote.launcher import is_supervised

    deadline = time.monotonic() + timeout
    for run_id in run_ids:
        while is_supervised(home, run_id) and time.monotonic() < deadline:
            time.sleep(0.5)


def test_production_instance_runs_remote_runs_through_the_queue_with_parity(  # type: ignore[no-untyped-def]
    production, project: Path
) -> None:
    client, env, server = production
    home = Path(env["DAGSTER_HOME"])
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.run_monitoring_enabled

        # Representative part of the remote suite: one remote run vs the same job locally.
        remote = _submit(client)
        runs = _wait_finished(instance, [remote], timeout=240)
        assert runs[remote].status == DagsterRunStatus.SUCCESS
        local_result = subprocess.run(
            [dagster_bin(), "job", "execute", "-m", "osiris_dagster.definitions", "-a", "defs", "-j", "movies_to_csv"],
            cwd=project, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert local_result.returncode == 0, local_result.stderr[-3000:]
        (local,) = [r.run_id for r in instance.get_runs() if r.run_id != remote]
        _wait_supervisors_gone(home, [remote])
        parity = run_cli(["parity", local, remote], cwd=project, env=env)
        assert parity.returncode == 0, parity.stdout + parity.stderr
        expected = _recorded_outputs(project, local)
        assert expected and _recorded_outputs(project, remote) == expected

        # 20 concurrent runs, submitted at once: the queue admits all 20 (max_concurrent_runs: 20).
        run_ids = [_submit(client) for _ in range(CONCURRENT_RUNS)]
        runs = _wait_finished(instance, run_ids, timeout=900)
        statuses = {run_id: run.status.value for run_id, run in runs.items()}
        assert set(statuses.values()) == {"SUCCESS"}, statuses
        sandboxes = {run.tags.get(SANDBOX_ID_TAG) for run in runs.values()}
        assert len(sandboxes) == CONCURRENT_RUNS and None not in sandboxes
        _wait_supervisors_gone(home, run_ids)
        for run_id in run_ids:
            assert _recorded_outputs(project, run_id) == expected, run_id
        for path, digest in expected.items():  # and the files on disk are those bytes
            assert hashlib.sha256((project / path).read_bytes()).hexdigest() == digest

        # Nothing of this instance is left on the sandbox server.
        sandboxes.add(instance.get_run_by_id(remote).tags.get(SANDBOX_ID_TAG))
        assert not {s.sandbox_id for s in Sandbox.list(**server.sdk_kwargs()).next_items()} & sandboxes
