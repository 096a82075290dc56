"""A job with incremental steps is refused by the launcher, not run wrong in a sandbox."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from tests.conftest import dagster_bin
from tests.remote.conftest import instance_for

pytestmark = pytest.mark.sandbox

INCREMENTAL = """
oml_version: "0.1.0"
name: reviews-incremental
steps:
- id: extract-reviews
  component: sql.extractor
  mode: read
  config: {connection: "@sqlite.movies", table: reviews, incremental: {cursor: id}}
- id: write-reviews
  component: filesystem.csv_writer
  mode: write
  needs: [extract-reviews]
  config: {path: output/reviews_incremental.csv}
"""


@pytest.mark.parametrize(
    ("selection", "named"),
    [((), "extract-reviews, write-reviews"), (("-o", "reviews_incremental__write_reviews"), "write-reviews")],
    ids=["whole-job", "only-the-appending-writer"],
)
def test_incremental_job_fails_at_launch_with_a_message_naming_the_steps(  # type: ignore[no-untyped-def]
    project: Path, remote_home, selection: tuple[str, ...], named: str
) -> None:
    (project / "assets" / "reviews_incremental.yaml").write_text(INCREMENTAL)
    _home, env = remote_home()
    subprocess.run(
        [dagster_bin(), "job", "launch", "-w", "workspace.yaml", "-j", "reviews_incremental", *selection],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    with instance_for(env) as instance:
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.FAILURE
        messages = " ".join(
            str(entry.dagster_event.engine_event_data.error or entry.message)
            for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        ) + " ".join(e.message for e in instance.all_logs(run.run_id))
    assert f"incremental steps ({named})" in messages, messages
    assert not (project / "output" / "reviews_incremental.csv").exists()
