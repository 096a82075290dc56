"""Traps the local backend hides from the cloud one, refused at launch with a message that says what to do.

No request reaches E2B (none could: no internet here): the launch fails before the SDK is used,
which is the point - the run fails in a second instead of minutes later in a sandbox.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from osiris_dagster.remote.settings import SandboxConfigError, SandboxSettings
from tests.conftest import dagster_bin
from tests.remote.conftest import instance_for

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
    _, env = remote_home(backend="e2b", api_url=None, sandbox_url=None)
    messages = _launch_failure(project, {**env, "E2B_API_KEY": "e2b_not_a_real_key"})
    assert "osiris-dagster e2b template build --name osiris-dagster" in messages, messages
    assert "template: osiris-dagster" in messages
    assert "e2b_not_a_real_key" not in messages
    assert not (Path(env["DAGSTER_HOME"]) / "e2b").exists() or not any((Path(env["DAGSTER_HOME"]) / "e2b").iterdir())


def test_cloud_backend_refuses_a_loopback_connection_host_at_launch(  # type: ignore[no-untyped-def]
    project: Path, remote_home
) -> None:
    _, env = remote_home(backend="e2b", api_url=None, sandbox_url=None, template="osiris-dagster")
    env = {**env, "E2B_API_KEY": "e2b_not_a_real_key", "OSIRIS_PARAM_MOVIES_DB": "mysql.movies"}
    del env["MYSQL_HOST"]
    messages = _launch_failure(project, env)  # MYSQL_HOST unset: the profile falls back to 127.0.0.1
    assert "@mysql.movies (host 127.0.0.1)" in messages, messages
    assert "Cloud backend: reachable hosts" in messages


def test_cloud_backend_with_a_reachable_host_passes_the_loopback_check(project: Path) -> None:
    from osiris_dagster.project import ProjectLayout
    from osiris_dagster.remote.job_needs import loopback_connections

    layout = ProjectLayout.discover(project)
    environ = {"OSIRIS_PARAM_MOVIES_DB": "mysql.movies"}
    assert loopback_connections(layout, "movies_to_csv", {}, environ) == [("@mysql.movies", "127.0.0.1")]
    for host in ("localhost", "127.0.0.2", "::1"):
        assert loopback_connections(layout, "movies_to_csv", {}, {**environ, "MYSQL_HOST": host})
    assert loopback_connections(layout, "movies_to_csv", {}, {**environ, "MYSQL_HOST": "db.example.com"}) == []
    assert loopback_connections(layout, "movies_to_csv", {}, {}) == []  # the sqlite demo: no host


def test_cloud_backend_passes_no_deprecated_sdk_argument() -> None:
    environ = {"E2B_API_KEY": "k", "E2B_DOMAIN": "e2b.example.org"}
    assert SandboxSettings(backend="e2b").sdk_kwargs(environ) == {"api_key": "k", "domain": "e2b.example.org"}
    with pytest.raises(SandboxConfigError, match="domain"):
        SandboxSettings(backend="e2b", api_url="http://127.0.0.1:1").sdk_kwargs(environ)


_EXPORT_OUTSIDE = """\
oml_version: "0.1.0"
name: export-outside
steps:
- id: extract-actors
  component: sql.extractor
  mode: read
  config: {connection: "@sqlite.movies", query: "SELECT * FROM actors ORDER BY id"}
- id: write-actors-outside
  component: filesystem.csv_writer
  mode: write
  needs: ["extract-actors"]
  config: {path: "%s/actors.csv"}
"""


def test_a_write_under_an_output_root_outside_the_project_is_refused_at_launch(  # type: ignore[no-untyped-def]
    project: Path, remote_home, tmp_path: Path
) -> None:
    # Locally this pipeline is valid (the project declares the folder); remotely the file would be
    # written in the sandbox's copy and never come back, so the launch must say so instead.
    exports = tmp_path / "exports"
    exports.mkdir()
    (project / "osiris.yaml").write_text(f"output_roots:\n  - {exports}\n")
    (project / "assets" / "export_outside.yaml").write_text(_EXPORT_OUTSIDE % exports)
    _, env = remote_home()
    messages = _launch_failure(project, env, job="export_outside")
    assert f"write-actors-outside -> {exports}/actors.csv" in messages, messages
    assert "brings back only files inside the project folder" in messages
    assert list(exports.iterdir()) == []
    assert not (Path(env["DAGSTER_HOME"]) / "e2b").exists() or not any((Path(env["DAGSTER_HOME"]) / "e2b").iterdir())
