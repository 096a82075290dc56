"""The pieces of a remote run that need no sandbox: archive safety, the relay, least privilege."""

from __future__ import annotations

import io
import tarfile
from importlib.metadata import version
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster import DagsterInstance, EventLogEntry, serialize_value
from dagster import _check as check
from e2b import Template

from osiris_dagster.project import ProjectLayout
from osiris_dagster.remote import relay_protocol
from osiris_dagster.remote.event_relay import EventRelay
from osiris_dagster.remote.job_needs import job_needs
from osiris_dagster.remote.result_archive import UnsafeArchiveError, unpack_result
from osiris_dagster.remote.run_selection import load_selection, plan_step_ids
from osiris_dagster.remote.template import sandbox_template


def _archive(*members: tuple[str, bytes | None, str | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "hostile",
    [
        ("project/../../escaped.txt", b"x", None),
        ("/tmp/absolute-escape.txt", b"x", None),
        ("project/output/link", None, "/etc/passwd"),
        ("elsewhere/file.txt", b"x", None),
    ],
)
def test_hostile_result_archive_is_refused_and_nothing_is_written(tmp_path: Path, hostile) -> None:  # type: ignore[no-untyped-def]
    project = tmp_path / "project"
    project.mkdir()
    data = _archive(("project/output/good.csv", b"a,b\n", None), hostile)
    with pytest.raises(UnsafeArchiveError):
        unpack_result(data, project)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["project"]


def test_result_archive_unpacks_at_local_paths_and_twice_changes_nothing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    data = _archive(("project/output/a.csv", b"\x00\xffbinary", None), ("compute_logs/k.out", b"hello", None))
    first = unpack_result(data, project)
    mtime = (project / "output/a.csv").stat().st_mtime_ns
    second = unpack_result(data, project)
    assert (project / "output/a.csv").read_bytes() == b"\x00\xffbinary"
    assert first.compute_logs == {"k.out": b"hello"} and (first.files, first.bytes) == (second.files, second.bytes)
    assert (project / "output/a.csv").stat().st_mtime_ns == mtime


def _entries(instance: DagsterInstance, count: int) -> list[EventLogEntry]:
    from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
    from dagster._core.events.log import EventLogEntry as Entry

    return [
        Entry(
            error_info=None,
            level=20,
            user_message=f"event {i}",
            run_id="relay-run",
            timestamp=float(i),
            dagster_event=DagsterEvent(
                DagsterEventType.ENGINE_EVENT.value, job_name="j", event_specific_data=EngineEventData()
            ),
        )
        for i in range(count)
    ]


def test_relay_splits_arbitrary_chunks_and_never_stores_an_event_twice(tmp_path: Path) -> None:
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "home")) as instance:
        lines = "".join(
            relay_protocol.protocol_line(i + 1, relay_protocol.EVENT, serialize_value(e))
            for i, e in enumerate(_entries(instance, 50))
        )
        stream = "noise before\n" + lines + relay_protocol.protocol_line(51, relay_protocol.STARTED, "{}")
        controls: list[str] = []
        relay = EventRelay(
            instance, "relay-run", tmp_path / "cursor", on_control=lambda kind, payload: controls.append(kind)
        )
        for start in range(0, len(stream), 37):  # chunks cut lines anywhere
            relay.feed(stream[start : start + 37])
        relay.close()
        assert controls == ["started"] and relay.events_stored == 50
        # A restarted supervisor re-reading the same stream stores nothing again.
        again = EventRelay(instance, "relay-run", tmp_path / "cursor")
        again.feed(stream)
        again.close()
        assert again.events_stored == 0
        assert len(instance.all_logs("relay-run")) == 50


def test_sandbox_gets_only_the_variables_its_connections_reference(project: Path) -> None:
    environ = {
        "OSIRIS_PARAM_MOVIES_DB": "mysql.movies",
        "MYSQL_PASSWORD": "s3cret-value",
        "MYSQL_USER": "reader",
        "UNRELATED_API_KEY": "do-not-forward",
        "AWS_SECRET_ACCESS_KEY": "do-not-forward",
        "HOME": "/root",
        "TZ": "UTC",
    }
    layout = ProjectLayout.discover(project)
    whole_job = load_selection(layout, {"movies_to_csv": ["*"]})
    needs = job_needs(layout, whole_job, {}, passthrough=("TZ",), environ=environ)
    assert needs.env == {
        "MYSQL_PASSWORD": "s3cret-value",
        "MYSQL_USER": "reader",
        "OSIRIS_PARAM_MOVIES_DB": "mysql.movies",
        "TZ": "UTC",
    }
    assert {"pymysql", "dagster"} <= set(needs.modules)
    local = job_needs(layout, whole_job, {}, environ={"MYSQL_PASSWORD": "x"})
    assert local.env == {} and "pymysql" not in local.modules  # the demo reads SQLite


def test_an_asset_job_run_needs_what_its_selected_steps_use(project: Path) -> None:
    """A Materialize across pipelines (`__ASSET_JOB`): the plan's steps decide, not the job's name."""
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.snap import snapshot_from_execution_plan

    from tests.automation.helpers import repository

    repo = repository(project)
    keys = {dg.AssetKey(["movies_to_csv", "extract_actors"])} | {
        key for key in repo.asset_graph.executable_asset_keys if key.path[0] == "movies_to_supabase"
    }
    job = check.not_none(repo.get_implicit_job_def_for_assets(list(keys))).get_subset(asset_selection=keys)
    plan = snapshot_from_execution_plan(create_execution_plan(job), job.get_job_snapshot_id())
    step_ids = plan_step_ids(plan, job.name)
    assert job.name == "__ASSET_JOB"
    assert step_ids["movies-to-csv"] == ["extract-actors"]
    assert sorted(step_ids["movies-to-supabase"]) == sorted(
        step["id"] for step in yaml.safe_load((project / "assets" / "movies_to_supabase.yaml").read_text())["steps"]
    )

    environ = {
        "OSIRIS_PARAM_MOVIES_DB": "mysql.movies",
        "MYSQL_PASSWORD": "s3cret-value",
        "SUPABASE_URL": "http://supabase.example",
        "SUPABASE_SERVICE_ROLE_KEY": "role-key",
        "UNRELATED_API_KEY": "do-not-forward",
    }
    layout = ProjectLayout.discover(project)
    needs = job_needs(layout, load_selection(layout, step_ids), {}, environ=environ)
    assert set(needs.env) == {"OSIRIS_PARAM_MOVIES_DB", "MYSQL_PASSWORD", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"}
    assert {"pymysql", "supabase"} <= set(needs.modules)
    # One extract of the CSV pipeline alone: the Supabase variables stay home.
    only_actors = job_needs(layout, load_selection(layout, {"movies-to-csv": ["extract-actors"]}), {}, environ=environ)
    assert set(only_actors.env) == {"OSIRIS_PARAM_MOVIES_DB", "MYSQL_PASSWORD"}


def test_template_is_python_311_with_the_pinned_dependencies() -> None:
    dockerfile = Template.to_dockerfile(sandbox_template())  # type: ignore[arg-type]
    assert dockerfile.startswith("FROM python:3.11")
    # The host's installed versions (installed with -c constraints.txt; test_version_check compares them).
    assert f"dagster=={version('dagster')}" in dockerfile and f"e2b=={version('e2b')}" in dockerfile


def test_run_folders_are_pruned_only_when_finished_and_past_retention(tmp_path: Path) -> None:
    import os

    from osiris_dagster.remote.run_files import RETENTION_S, RunFiles, prune_run_folders

    now = 1_000_000_000.0
    for run_id, age in (("old-done", RETENTION_S + 60), ("old-running", RETENTION_S + 60), ("new-done", 60)):
        files = RunFiles.for_run(tmp_path, run_id)
        files.root.mkdir(parents=True)
        files.spec.write_text("{}")
        os.utime(files.spec, (now - age, now - age))
    (tmp_path / "e2b" / "sandbox_home").mkdir()  # not a run's folder: never touched
    os.utime(tmp_path / "e2b" / "sandbox_home", (now - 10 * RETENTION_S,) * 2)

    pruned = prune_run_folders(tmp_path / "e2b", lambda run_id: run_id.endswith("done"), now=now)

    assert pruned == ["old-done"]
    assert sorted(p.name for p in (tmp_path / "e2b").iterdir()) == ["new-done", "old-running", "sandbox_home"]
