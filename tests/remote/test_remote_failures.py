"""Remote runs that go wrong: missing modules, wrong password, cancel, a sandbox killed underneath."""

from __future__ import annotations

import base64
import hashlib
import uuid
import zipfile
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus
from e2b import Sandbox

from osiris_dagster.remote.launcher import E2BRunLauncher
from osiris_dagster.remote.tags import SANDBOX_ID_TAG
from osiris_dagster.session.reader import SessionRecord
from tests.conftest import run_cli
from tests.remote.conftest import (
    add_slow_pipeline,
    bytes_containing,
    dagster_launch,
    instance_for,
    supervisor_alive,
    wait_for_event,
    wait_for_run,
)

pytestmark = pytest.mark.sandbox
FAKE_MODULE = "osiris_fake_driver"


def _failure_message(instance, run_id: str) -> str:  # type: ignore[no-untyped-def]

    (failure,) = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    return failure.message or ""


def test_missing_module_fails_within_seconds_naming_module_and_fixes(project: Path, remote_home) -> None:  # type: ignore[no-untyped-def]
    _, env = remote_home(preflight_modules=[FAKE_MODULE])
    run_id = dagster_launch(project, env)
    instance = instance_for(env)
    # "Fast" is what the user sees: the run fails at the dependency check, before the job starts
    # (no step ever starts), instead of a step dying later on an ImportError. No wall-clock bound:
    # this machine's load decides seconds, the preflight decides whether a step ran.
    run = wait_for_run(instance, run_id, timeout=180)
    assert run.status == DagsterRunStatus.FAILURE
    assert not instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
    message = _failure_message(instance, run_id)
    assert FAKE_MODULE in message and "template" in message and "install_deps: true" in message
    session = SessionRecord.read(project / "logs" / f"run_{run_id}")
    (check,) = [e for e in session.events if e["event"] == "dependency_check"]
    assert check["missing"] == [FAKE_MODULE] and "dagster" in check["present"]
    assert session.status["ok"] is False and session.status["sandbox_id"] == run.tags[SANDBOX_ID_TAG]
    assert not (project / "output").exists()


def _tiny_wheel(directory: Path) -> Path:
    """A pure-Python wheel holding one module, built by hand (pip installs it offline)."""
    directory.mkdir()
    name, version = FAKE_MODULE, "0.1.0"
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"DRIVER = 'fake'\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def test_install_deps_from_a_local_wheel_dir_makes_the_run_succeed(project: Path, tmp_path: Path, remote_home) -> None:  # type: ignore[no-untyped-def]
    wheel = _tiny_wheel(tmp_path / "wheels")
    _, env = remote_home(preflight_modules=[FAKE_MODULE], install_deps=True, wheel_dir=str(wheel.parent))
    run_id = dagster_launch(project, env)
    run = wait_for_run(instance_for(env), run_id)
    assert run.status == DagsterRunStatus.SUCCESS
    session = SessionRecord.read(project / "logs" / f"run_{run_id}")
    (installed,) = [e for e in session.events if e["event"] == "dependency_installed"]
    assert installed["now_present"] == [FAKE_MODULE] and installed["still_missing"] == []


@pytest.mark.mariadb
def test_wrong_mysql_password_fails_and_never_reaches_any_log(  # type: ignore[no-untyped-def]
    project: Path, remote_home, mariadb_database: str, mariadb_connect
) -> None:
    user, password = f"osiris_{uuid.uuid4().hex[:8]}", f"Right-Horse-{uuid.uuid4().hex[:10]}"
    wrong = f"Wrong-Battery-{uuid.uuid4().hex[:10]}"
    connection = mariadb_connect()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cursor.execute(f"GRANT ALL ON `{mariadb_database}`.* TO '{user}'@'%'")
    try:
        home, env = remote_home()
        url = f"mysql+pymysql://{user}:{password}@127.0.0.1:3306/{mariadb_database}"
        loaded = run_cli(["demo", "load-mysql", "--url", url], cwd=project, env=env)
        assert loaded.returncode == 0, loaded.stderr
        env = {
            **env,
            "OSIRIS_PARAM_MOVIES_DB": "mysql.movies",
            "MYSQL_DATABASE": mariadb_database,
            "MYSQL_USER": user,
            "MYSQL_PASSWORD": wrong,
            "UNRELATED_API_KEY": "must-not-enter-the-sandbox",
        }
        run_id = dagster_launch(project, env)
        instance = instance_for(env)
        run = wait_for_run(instance, run_id)
        assert run.status == DagsterRunStatus.FAILURE
        reason = SessionRecord.read(project / "logs" / f"run_{run_id}").status["reason"]
        assert "Access denied" in reason or "1045" in reason, reason
        assert not bytes_containing(wrong, project, home)
        assert not bytes_containing(password, project, home)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_terminate_mid_run_cancels_kills_the_sandbox_and_leaves_no_supervisor(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server
) -> None:
    add_slow_pipeline(project)
    _, env = remote_home()
    run_id = dagster_launch(project, env, job="slow_count")
    instance = instance_for(env)
    wait_for_event(instance, run_id, "STEP_START")
    assert instance.run_launcher.terminate(run_id)
    run = wait_for_run(instance, run_id, timeout=45)
    assert run.status == DagsterRunStatus.CANCELED
    assert not supervisor_alive(instance, run)
    sandbox_id = run.tags[SANDBOX_ID_TAG]
    assert sandbox_id not in {s.sandbox_id for s in Sandbox.list(**sandbox_server.sdk_kwargs()).next_items()}
    session = SessionRecord.read(project / "logs" / f"run_{run_id}")
    assert session.event_counts()["sandbox_killed"] == 1


def test_sandbox_killed_underneath_fails_the_run_with_debug_info(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server
) -> None:
    add_slow_pipeline(project)
    _, env = remote_home()
    run_id = dagster_launch(project, env, job="slow_count")
    instance = instance_for(env)
    wait_for_event(instance, run_id, "STEP_START")
    sandbox_id = instance.get_run_by_id(run_id).tags[SANDBOX_ID_TAG]
    assert Sandbox.kill(sandbox_id, **sandbox_server.sdk_kwargs())
    run = wait_for_run(instance, run_id, timeout=30)
    assert run.status == DagsterRunStatus.FAILURE
    assert "sandbox" in _failure_message(instance, run_id)
    launcher = instance.run_launcher
    assert isinstance(launcher, E2BRunLauncher)
    debug = launcher.get_run_worker_debug_info(run)
    assert debug and sandbox_id in debug and "last log lines" in debug
    assert launcher.check_run_worker_health(run).status.value == "SUCCESS"  # finished: nothing left to monitor
