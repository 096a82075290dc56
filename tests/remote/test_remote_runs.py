"""A run launched through the E2B launcher ends on the host exactly as a local run does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterRunStatus

from osiris_dagster.remote.tags import SANDBOX_ID_TAG, SUPERVISOR_PID_TAG
from osiris_dagster.session.parity import compare_sessions
from osiris_dagster.session.reader import SessionRecord
from tests.conftest import REPO, run_cli
from tests.remote.conftest import dagster_execute, dagster_launch, instance_for, wait_for_run

pytestmark = pytest.mark.sandbox

ASSETS = ["extract_actors", "extract_directors", "extract_movies", "extract_movie_actors", "extract_reviews"]
WRITTEN = ["write_actors_csv", "write_directors_csv", "write_movies_csv", "write_movie_actors_csv", "write_reviews_csv"]


def _copy_project(root: Path) -> Path:
    root.mkdir()
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
    return root


# Speeds measured by the run: equal only by chance.
TIMINGS = {"rows_per_second"}


def _materialization_metadata(instance, run_id: str, project: Path) -> dict[str, dict[str, object]]:  # type: ignore[no-untyped-def]
    found = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        # The session dir's name holds the run id, and dagster/uri the absolute HOST project folder
        # (a sandboxed run's files land there, not in the sandbox's folder): the values that differ by nature.
        found[materialization.asset_key.to_user_string()] = {
            key: (
                type(value).__name__,
                repr(value.value).replace(run_id, "<run id>").replace(project.resolve().as_uri(), "<project>"),
            )
            for key, value in materialization.metadata.items()
            if key not in TIMINGS
        }
    return found


def test_remote_run_matches_local_run_byte_for_byte(tmp_path: Path, remote_home) -> None:  # type: ignore[no-untyped-def]
    _home, env = remote_home()
    local_project = _copy_project(tmp_path / "local")
    remote_project = _copy_project(tmp_path / "remote")
    local_id = dagster_execute(local_project, env)
    remote_id = dagster_launch(remote_project, env)
    instance = instance_for(env)
    run = wait_for_run(instance, remote_id)

    assert run.status == DagsterRunStatus.SUCCESS
    assert run.tags[SANDBOX_ID_TAG] and run.tags[SUPERVISOR_PID_TAG]
    # Materializations with their typed metadata, and asset checks, landed on the host.
    remote_metadata = _materialization_metadata(instance, remote_id, remote_project)
    assert remote_metadata == _materialization_metadata(instance, local_id, local_project)
    assert remote_metadata["movies_to_csv/write_actors_csv"]["dagster/uri"] == (
        "TextMetadataValue",
        "'<project>/output/actors.csv'",
    )
    checks = instance.all_logs(remote_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    assert len(checks) == len(WRITTEN) and all(c.dagster_event.event_specific_data.passed for c in checks)
    for name in ASSETS + WRITTEN:
        assert instance.get_latest_materialization_event(AssetKey(["movies_to_csv", name])).run_id == remote_id
    # Compute logs are readable through the host's compute-log manager.
    captured = instance.all_logs(remote_id, of_type=DagsterEventType.LOGS_CAPTURED)
    assert captured
    log_key = captured[0].dagster_event.logs_captured_data.external_stdout_url or None
    file_key = captured[0].dagster_event.logs_captured_data.file_key
    data = instance.compute_log_manager.get_log_data([remote_id, "compute_logs", file_key])
    assert data.stdout is not None and data.stderr is not None and log_key is None

    # Parity: same files, same data-flow metrics, same artifacts, same events bar the remote-only list.
    for csv in sorted((local_project / "output").glob("*.csv")):
        assert (remote_project / "output" / csv.name).read_bytes() == csv.read_bytes()
    local_session = local_project / "logs" / f"run_{local_id}"
    remote_session = remote_project / "logs" / f"run_{remote_id}"
    report = compare_sessions(local_session, remote_session)
    assert report.ok, report.render()
    remote = SessionRecord.read(remote_session)
    assert remote.status["sandbox_id"] == run.tags[SANDBOX_ID_TAG]
    assert {"sandbox_created", "dependency_check", "artifacts_downloaded", "sandbox_killed"} <= set(
        remote.event_counts()
    )
    assert {"e2b_overhead_ms", "artifacts_copy_ms", "artifacts_files_total", "artifacts_bytes_total"} <= {
        m["metric"] for m in remote.metrics
    }

    same = run_cli(["parity", str(local_session), str(remote_session)], cwd=remote_project, env=env)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "PARITY" in same.stdout
    csv = remote_project / "output" / "actors.csv"
    data_bytes = bytearray(csv.read_bytes())
    data_bytes[-2] ^= 0x01
    csv.write_bytes(bytes(data_bytes))
    different = run_cli(["parity", str(local_session), str(remote_session)], cwd=remote_project, env=env)
    assert different.returncode == 1, different.stdout
    assert "output/actors.csv" in different.stdout and "DIFFERENT" in different.stdout


def test_queued_run_launched_by_the_instance_api_as_the_daemon_does(
    project: Path,
    remote_home,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, env = remote_home()
    # The daemon runs from the project folder (`dagster-daemon run -w workspace.yaml`).
    monkeypatch.chdir(project)
    monkeypatch.delenv("OSIRIS_PROJECT_DIR", raising=False)
    from tests.remote.conftest import write_instance_config

    write_instance_config(home, _server_of(home), queued=True)
    run_id = dagster_launch(project, env)  # queued: the coordinator only enqueues it
    instance = instance_for(env)
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.QUEUED
    instance.launch_run(run_id, workspace=None)  # type: ignore[arg-type]  # what the daemon calls; unused here
    # It returns at once, the run going on in the background (no timing: the machine may be loaded).
    assert instance.get_run_by_id(run_id).status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
    run = wait_for_run(instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS
    assert sorted(p.name for p in (project / "output").glob("*.csv")) == sorted(
        ["actors.csv", "directors.csv", "movies.csv", "movie_actors.csv", "reviews.csv"]
    )


def _server_of(home: Path):  # type: ignore[no-untyped-def]
    """The sandbox server URL already written in this home's dagster.yaml."""
    import yaml

    from osiris_dagster.sandbox_server import LocalSandboxServer

    config = yaml.safe_load((home / "dagster.yaml").read_text())["run_launcher"]["config"]

    class _Server(LocalSandboxServer):
        url = config["server_url"]  # type: ignore[assignment]

    return _Server()
