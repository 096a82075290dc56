"""Traps the local backend hides from the cloud one, refused at launch with a message that says what to do.

No request reaches E2B (none could: no internet here): the launch fails before the SDK is used,
which is the point - the run fails in a second instead of minutes later in a sandbox.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from osiris_dagster.remote.settings import SandboxConfigError, SandboxSettings
from osiris_dagster.sandbox_server import LocalSandboxServer
from tests.conftest import dagster_bin
from tests.remote.conftest import bytes_containing, dagster_launch, instance_for, wait_for_run

pytestmark = pytest.mark.sandbox


def _launch_failure(project: Path, env: dict[str, str], job: str = "movies_to_csv") -> str:
    subprocess.run(
        [dagster_bin(), "job", "launch", "-w", "workspace.yaml", "-j", job],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    with instance_for(env) as instance:
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.FAILURE
        return "\n".join(
            str(entry.dagster_event.engine_event_data.error or "") + (entry.message or "")
            for entry in instance.all_logs(run.run_id)
            if entry.dagster_event and entry.dagster_event_type == DagsterEventType.ENGINE_EVENT
        )


def test_default_template_without_dagster_fails_at_launch_naming_the_build_command(  # type: ignore[no-untyped-def]
    project: Path, remote_home
) -> None:
    _, env = remote_home(backend="e2b", server_url=None)
    messages = _launch_failure(project, {**env, "E2B_API_KEY": "e2b_not_a_real_key"})
    assert "osiris-dagster e2b template build --name osiris-dagster" in messages, messages
    assert "template: osiris-dagster" in messages
    assert "e2b_not_a_real_key" not in messages
    # Nothing of the run was written: no run folder, nothing spooled (the resident supervision
    # service, started when the launcher loaded, keeps its own files there), no key anywhere.
    e2b = Path(env["DAGSTER_HOME"]) / "e2b"
    run_folders = [p.name for p in e2b.iterdir() if p.is_dir() and p.name != "spool"] if e2b.exists() else []
    assert run_folders == []
    assert not (e2b / "spool").exists() or not any((e2b / "spool").iterdir())
    assert bytes_containing("e2b_not_a_real_key", Path(env["DAGSTER_HOME"])) == []


def test_cloud_backend_refuses_a_loopback_connection_host_at_launch(  # type: ignore[no-untyped-def]
    project: Path, remote_home
) -> None:
    _, env = remote_home(backend="e2b", server_url=None, template="osiris-dagster")
    env = {**env, "E2B_API_KEY": "e2b_not_a_real_key", "OSIRIS_PARAM_MOVIES_DB": "mysql.movies"}
    del env["MYSQL_HOST"]
    messages = _launch_failure(project, env)  # MYSQL_HOST unset: the profile falls back to 127.0.0.1
    assert "@mysql.movies (host 127.0.0.1)" in messages, messages
    assert "Cloud backend: reachable hosts" in messages


def test_cloud_backend_with_a_reachable_host_passes_the_loopback_check(project: Path) -> None:
    from osiris_dagster.project import ProjectLayout
    from osiris_dagster.remote.job_needs import loopback_connections
    from osiris_dagster.remote.run_selection import load_selection

    layout = ProjectLayout.discover(project)
    job = load_selection(layout, {"movies-to-csv": ["*"]})
    environ = {"OSIRIS_PARAM_MOVIES_DB": "mysql.movies"}
    assert loopback_connections(layout, job, {}, environ) == [("@mysql.movies", "127.0.0.1")]
    for host in ("localhost", "127.0.0.2", "::1"):
        assert loopback_connections(layout, job, {}, {**environ, "MYSQL_HOST": host})
    assert loopback_connections(layout, job, {}, {**environ, "MYSQL_HOST": "db.example.com"}) == []
    assert loopback_connections(layout, job, {}, {}) == []  # the sqlite demo: no host


def test_no_backend_passes_a_deprecated_sdk_argument(sandbox_server: LocalSandboxServer) -> None:
    environ = {"E2B_API_KEY": "k", "E2B_DOMAIN": "e2b.example.org"}
    assert SandboxSettings(backend="e2b").sdk_kwargs(environ) == {"api_key": "k", "domain": "e2b.example.org"}
    with pytest.raises(SandboxConfigError, match="domain"):
        SandboxSettings(backend="e2b", server_url="http://127.0.0.1:1").sdk_kwargs(environ)
    # The local backend: the supported settings only, the server reached as a proxy.
    local = SandboxSettings(backend="local").sdk_kwargs({"OSIRIS_SANDBOX_SERVER": sandbox_server.url})
    assert local == {"api_key": "e2b_local_sandbox", "domain": "sandbox.osiris.internal", "proxy": sandbox_server.url}
    assert os.environ["SSL_CERT_FILE"] == str(sandbox_server.trust_file)


@pytest.mark.parametrize("name", ["api_url", "sandbox_url"])
def test_deprecated_settings_in_the_config_are_refused_naming_the_replacement(name: str) -> None:
    with pytest.raises(SandboxConfigError, match=f"config.{name} is no longer accepted.*server_url"):
        SandboxSettings.from_config({"backend": "local", name: "http://127.0.0.1:8123"})


@pytest.mark.parametrize("name", ["E2B_API_URL", "E2B_SANDBOX_URL"])
@pytest.mark.parametrize("backend", ["local", "e2b"])
def test_deprecated_variables_in_the_environment_are_refused_naming_the_replacement(name: str, backend: str) -> None:
    environ = {"E2B_API_KEY": "k", "OSIRIS_SANDBOX_SERVER": "http://127.0.0.1:8123", name: "http://127.0.0.1:8123"}
    with pytest.raises(SandboxConfigError, match=f"{name} in the environment.*OSIRIS_SANDBOX_SERVER"):
        SandboxSettings(backend=backend).sdk_kwargs(environ)  # type: ignore[arg-type]


def test_a_whole_remote_run_makes_no_plain_http_request(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server: LocalSandboxServer
) -> None:
    _, env = remote_home()
    before = dict(sandbox_server.requests_by_scheme)
    with instance_for(env) as instance:
        run = wait_for_run(instance, dagster_launch(project, env))
    assert run.status == DagsterRunStatus.SUCCESS
    after = dict(sandbox_server.requests_by_scheme)
    assert after.get("http", 0) == before.get("http", 0), after
    assert after["https"] - before.get("https", 0) >= 5  # create, upload, start, download, kill at least
