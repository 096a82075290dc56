"""Many runs at once, each in its own sandbox, with no cross-talk."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from osiris_dagster.remote.tags import SANDBOX_ID_TAG
from osiris_dagster.session.reader import SessionRecord
from tests.remote.conftest import instance_for, wait_for_run, write_instance_config

pytestmark = pytest.mark.sandbox


def test_ten_concurrent_launches_all_succeed_in_their_own_sandboxes(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, env = remote_home()
    write_instance_config(home, sandbox_server, queued=True)
    monkeypatch.chdir(project)
    monkeypatch.delenv("OSIRIS_PROJECT_DIR", raising=False)
    from tests.remote.conftest import dagster_launch

    first = dagster_launch(project, env)  # one queued run from the real code location ...
    instance = instance_for(env)
    template = instance.get_run_by_id(first)
    run_ids = [first]
    for _ in range(9):  # ... and nine more of the same job, as a sensor would submit them
        run = instance.add_run(template.with_status(DagsterRunStatus.QUEUED)._replace(run_id=str(uuid.uuid4())))
        run_ids.append(run.run_id)
    for run_id in run_ids:
        instance.launch_run(run_id, workspace=None)  # type: ignore[arg-type]
    runs = [wait_for_run(instance, run_id, timeout=240) for run_id in run_ids]

    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 10
    assert len({run.tags[SANDBOX_ID_TAG] for run in runs}) == 10
    for run in runs:
        session = SessionRecord.read(project / "logs" / f"run_{run.run_id}")
        assert session.status["sandbox_id"] == run.tags[SANDBOX_ID_TAG] and session.status["ok"]
        assert {line["session"] for line in session.events} == {f"run_{run.run_id}"}
        assert session.event_counts()["step_complete"] == 10
        assert {e.run_id for e in instance.all_logs(run.run_id)} == {run.run_id}
    assert json.loads((project / "logs" / f"run_{first}" / "status.json").read_text())["steps_completed"] == 10
