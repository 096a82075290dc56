"""Host and sandbox must run the same Dagster and product release: the template pins them, and a
launch into a sandbox whose Python reports another version fails early with a clear message."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from osiris_dagster.remote.template import pinned_requirements
from tests.conftest import run_cli
from tests.e2e.demo_expectations import REPO
from tests.remote.conftest import dagster_launch, instance_for, wait_for_run


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_template_pins_every_runtime_dependency_at_the_constraints_version(project: Path, clean_env) -> None:  # type: ignore[no-untyped-def]
    locked = constraints()
    pins = dict(pin.split("==") for pin in pinned_requirements())
    assert {"dagster", "dagster-pipes", "dagster-webserver", "pyarrow", "e2b"} <= set(pins)
    for name, version in pins.items():
        assert locked.get(re.sub(r"[-_.]+", "-", name).lower()) == version, f"{name}=={version} not in constraints.txt"
    dockerfile = run_cli(["e2b", "template", "dockerfile"], cwd=project, env=clean_env)
    assert dockerfile.returncode == 0, dockerfile.stderr
    assert f"dagster=={locked['dagster']}" in dockerfile.stdout.split()


@pytest.mark.sandbox
def test_launch_into_a_sandbox_with_another_dagster_fails_early_naming_both_versions(
    project: Path, tmp_path: Path, remote_home
) -> None:  # type: ignore[no-untyped-def]
    # The sandbox's Python sees a `dagster` distribution of another release first on its path: the
    # real interpreter behind a shim, as an older template image would be.
    fake = tmp_path / "older_dagster"
    (fake / "dagster-1.12.0.dist-info").mkdir(parents=True)
    (fake / "dagster-1.12.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dagster\nVersion: 1.12.0\n"
    )
    shim = tmp_path / "python-older-dagster"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{fake}:$PYTHONPATH" exec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    _, env = remote_home(python=str(shim))

    run_id = dagster_launch(project, env)
    instance = instance_for(env)
    run = wait_for_run(instance, run_id, timeout=60)
    assert run.status == DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    message = failure.message or ""
    from importlib.metadata import version

    assert f"dagster {version('dagster')} on the host, 1.12.0 in the sandbox" in message, message
    assert "osiris-dagster e2b template build" in message, message
    assert not instance.all_logs(run_id, of_type=DagsterEventType.STEP_START), "a step ran on the wrong Dagster"
    assert not (project / "output").exists()
    status = (project / "logs" / f"run_{run_id}" / "status.json").read_text()
    assert '"ok": false' in status
