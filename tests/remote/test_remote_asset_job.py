"""The UI's "Materialize all" through the E2B launcher: a run of Dagster's implicit `__ASSET_JOB`.

A run started from the Catalog or an asset group is not a pipeline's named job: its job name is
`__ASSET_JOB` and its steps are the selected assets. The launcher must still work out what the
run needs (the connection variables and the `OSIRIS_PARAM_*` that choose the connection); before,
it found the pipeline by job name only, forwarded nothing, and the sandbox read the embedded
SQLite demo instead of MariaDB — a different database than the same click runs locally, reported
as SUCCESS.

The launch goes through a real `osiris-dagster ui` (webserver + daemon) with the GraphQL mutation
the UI's "Materialize all" button sends. The expected rows come from MariaDB itself, one of them
changed there first so that a run reading any other database cannot pass.
"""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType

from osiris_dagster.project import ProjectLayout
from osiris_dagster.remote.tags import SANDBOX_ID_TAG
from osiris_dagster.sandbox_server import LocalSandboxServer
from osiris_dagster.session.catalogue import catalogue, validator
from osiris_dagster.session.reader import SessionRecord
from tests.conftest import connect_mariadb, run_cli
from tests.e2e.test_dagster_dev import graphql, start_ui
from tests.e2e.test_ui_shutdown import graphql_vars
from tests.remote.conftest import instance_for

pytestmark = [pytest.mark.sandbox, pytest.mark.mariadb, pytest.mark.e2e]

ASSETS = "{ assetNodes { assetKey { path } groupName isMaterializable } }"
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
# What the asset group's "Materialize all" sends (the Catalog's sends every asset of the location).
MATERIALIZE = """
mutation($location: String!, $assets: [AssetKeyInput!]!) {
  launchPipelineExecution(executionParams: {
    selector: {repositoryLocationName: $location, repositoryName: "__repository__",
               pipelineName: "__ASSET_JOB", assetSelection: $assets}
    mode: "default"
    executionMetadata: {tags: []}
  }) { __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } }
}
"""
MARKER = "Only-In-MariaDB Actor"


def test_materialize_all_of_a_mariadb_group_runs_remotely_on_mariadb(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server: LocalSandboxServer, mariadb_database: str
) -> None:
    _, env = remote_home()
    loaded = run_cli(
        ["demo", "load-mysql", "--url", f"mysql+pymysql://root@127.0.0.1:3306/{mariadb_database}"], cwd=project, env=env
    )
    assert loaded.returncode == 0, loaded.stderr
    with connect_mariadb(mariadb_database) as db, db.cursor() as cursor:
        cursor.execute(
            "UPDATE actors SET name = %s WHERE id = (SELECT MIN(id) FROM (SELECT id FROM actors) a)", (MARKER,)
        )
        db.commit()
        cursor.execute("SELECT name FROM actors ORDER BY id")
        expected_names = [row[0] for row in cursor.fetchall()]
    env = {**env, "OSIRIS_PARAM_MOVIES_DB": "mysql.movies", "MYSQL_DATABASE": mariadb_database}

    ui, port, log = start_ui(project, env)
    try:
        nodes = _wait(lambda: graphql(port, ASSETS)["data"]["assetNodes"], "the assets in the UI", ui, log, 150)
        (location,) = [e["name"] for e in graphql(port, LOCATIONS)["data"]["workspaceOrError"]["locationEntries"]]
        group = [
            {"path": node["assetKey"]["path"]}
            for node in nodes
            if node["groupName"] == "movies_to_csv" and node["isMaterializable"]
        ]
        assert len(group) == 10, nodes
        launched = graphql_vars(port, MATERIALIZE, {"location": location, "assets": group})
        launched = launched["data"]["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        query = f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ status jobName tags {{ key value }} }} }} }}'
        run = _wait(
            lambda: (
                (r := graphql(port, query)["data"]["runOrError"])["status"] in ("SUCCESS", "FAILURE", "CANCELED") and r
            ),
            "the run to finish",
            ui,
            log,
            240,
        )
    finally:
        ui.terminate()
        ui.wait(timeout=60)

    assert run["jobName"] == "__ASSET_JOB"
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags.get(SANDBOX_ID_TAG), tags  # it did run in a sandbox
    assert run["status"] == "SUCCESS", (run, log.read_text()[-3000:])
    with (project / "output" / "actors.csv").open(newline="", encoding="utf-8") as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    assert names == expected_names and MARKER in names

    # A first-class run: its session is complete and valid, and each written asset's check ran.
    record = SessionRecord.read(ProjectLayout(project).session_dir(run_id))
    local_kind = [line["event"] for line in record.events if line["event"] not in catalogue().remote_only_events]
    assert local_kind[0] == "run_start" and local_kind[-1] == "run_end", local_kind
    for line in record.events:
        validator("events").validate(line)
    status = record.status or {}
    validator("status").validate(status)
    assert status["ok"] is True and status["job"] == "__ASSET_JOB", status
    assert status["pipelines"] == ["movies-to-csv"]
    assert status["steps_total"] == status["steps_completed"] == 10
    with instance_for(env) as instance:
        checks = [
            event.asset_check_evaluation_data
            for event in (
                record.event_log_entry.dagster_event
                for record in instance.get_records_for_run(
                    run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
                ).records
            )
            if event is not None
        ]
    assert len(checks) == 5 and all(check.passed for check in checks), checks


def _wait(probe, what: str, ui: subprocess.Popen, log: Path, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (OSError, KeyError, TypeError):
            found = None
        if found:
            return found
        assert ui.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{log.read_text()[-3000:]}")
