"""The metadata a dagster-sling / dagster-dlt user expects, as Dagster itself stores it.

A MariaDB table with awkward types is extracted and written to CSV by `dagster job execute`; the
materializations are read back from the Dagster instance, and the column types are compared with
MariaDB's own `information_schema.COLUMNS.COLUMN_TYPE`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from unittest.mock import patch
from urllib.parse import urlparse

import dagster as dg
import pytest
import yaml

from tests.conftest import dagster_bin

INTEGER_WIDTH = re.compile(r"^((?:tiny|small|medium|big)?int)\(\d+\)")
PIPELINE = {
    "oml_version": "0.1.0",
    "name": "typed-films",
    "owners": ["team:data-platform"],
    "tags": {"domain": "movies", "tier": "gold"},
    "steps": [
        {
            "id": "extract-films",
            "component": "mysql.extractor",
            "mode": "read",
            "owners": ["ana@example.com"],
            "tags": {"tier": "silver"},
            "config": {"connection": "@mysql.movies", "query": "SELECT * FROM films ORDER BY id"},
        },
        {
            "id": "write-films-csv",
            "component": "filesystem.csv_writer",
            "mode": "write",
            "needs": ["extract-films"],
            "config": {"path": "output/films.csv"},
        },
    ],
}
DDL = """CREATE TABLE films (
  id INT NOT NULL PRIMARY KEY,
  title VARCHAR(40) NOT NULL,
  rating DECIMAL(3,1),
  released DATETIME(3),
  budget BIGINT UNSIGNED
)"""


def information_schema_types(connection, database: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'films' ORDER BY ORDINAL_POSITION",
            (database,),
        )
        # MariaDB adds a display width to integer types (`int(11)`); it is not part of the type.
        return [(str(name), INTEGER_WIDTH.sub(r"\1", str(kind))) for name, kind in cursor.fetchall()]


@pytest.mark.e2e
@pytest.mark.mariadb
def test_materializations_carry_source_sql_types_table_names_uris_owners_and_tags(
    project: Path, clean_env: dict[str, str], mariadb_database: str, mariadb_connect
) -> None:  # type: ignore[no-untyped-def]
    connection = mariadb_connect(mariadb_database)
    with connection.cursor() as cursor:
        cursor.execute(DDL)
        cursor.execute(
            "INSERT INTO films VALUES (1, 'Amélie', 8.0, '2001-04-25 10:00:00.125', 10000000), "
            "(2, 'Stalker', NULL, NULL, NULL)"
        )
    expected_types = information_schema_types(connection, mariadb_database)
    connection.close()
    (project / "assets" / "typed_films.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    env = {**clean_env, "MYSQL_DATABASE": mariadb_database}
    result = subprocess.run(
        [dagster_bin(), "job", "execute", "-m", "osiris_dagster.definitions", "-j", "typed_films"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    extract_key = dg.AssetKey(["typed_films", "extract_films"])
    write_key = dg.AssetKey(["typed_films", "write_films_csv"])
    with dg.DagsterInstance.from_config(clean_env["DAGSTER_HOME"]) as instance:
        extracted = instance.get_latest_materialization_event(extract_key).asset_materialization.metadata
        written = instance.get_latest_materialization_event(write_key).asset_materialization.metadata
        run_id = instance.get_latest_materialization_event(write_key).run_id

    for metadata in (extracted, written):
        columns = metadata["dagster/column_schema"].value.columns
        got = [(column.name, column.type) for column in columns]
        assert [(n, t.lower()) for n, t in got] == [(n, t.lower()) for n, t in expected_types], got
        assert columns[1].description.startswith("Arrow: ")
    assert extracted["dagster/table_name"].value == "films"
    assert written["dagster/table_name"].value == "output/films.csv"

    written_uri = written["dagster/uri"].value
    assert written_uri == (project / "output" / "films.csv").resolve().as_uri()
    assert Path(urlparse(written_uri).path).read_text(encoding="utf-8").startswith("id,title,")
    staged = Path(urlparse(extracted["dagster/uri"].value).path)
    assert staged.is_absolute() and staged.is_file() and staged.is_relative_to(project.resolve())

    artifacts = written["artifacts"].value.splitlines()
    assert artifacts == [f"- `logs/run_{run_id}/artifacts/write-films-csv/cleaned_config.json`"]
    assert (project / artifacts[0][3:-1]).is_file()

    # Lineage, owners and tags as the UI reads them: Dagster's GraphQL API over the workspace.
    nodes = _asset_nodes_over_graphql(project, env)
    source = nodes["typed_films/source/films"]
    assert source["isExecutable"] is False and source["kinds"] == ["mysql"]
    assert {m["label"]: m.get("text") for m in source["metadataEntries"]}["dagster/table_name"] == "films"
    extract = nodes["typed_films/extract_films"]
    assert extract["dependencyKeys"] == [{"path": ["typed_films", "source", "films"]}]
    assert extract["owners"] == [{"team": "data-platform"}, {"email": "ana@example.com"}]
    assert _user_tags(extract["tags"]) == {"domain": "movies", "tier": "silver"}
    writer = nodes["typed_films/write_films_csv"]
    assert writer["owners"] == [{"team": "data-platform"}]
    assert _user_tags(writer["tags"]) == {"domain": "movies", "tier": "gold"}


ASSET_NODES = """
{
  assetNodes {
    assetKey { path }
    isExecutable
    kinds
    dependencyKeys { path }
    owners { ... on UserAssetOwner { email } ... on TeamAssetOwner { team } }
    tags { key value }
    metadataEntries { label ... on TextMetadataEntry { text } }
  }
}
"""


def _asset_nodes_over_graphql(project: Path, env: dict[str, str]) -> dict[str, dict]:
    """Query the project's workspace.yaml code location (a real code server process)."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    previous = os.getcwd()
    os.chdir(project)  # workspace.yaml's working_directory is relative to it
    try:
        # The code server is a subprocess of this one: it must see the test's environment, not
        # whatever OSIRIS_PROJECT_DIR an earlier in-process test left in os.environ.
        with (
            patch.dict(os.environ, env, clear=True),
            dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance,
            WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=["workspace.yaml"])) as context,
        ):
            result = execute_dagster_graphql(context.create_request_context(), ASSET_NODES)
    finally:
        os.chdir(previous)
    assert not result.errors, result.errors
    return {"/".join(node["assetKey"]["path"]): node for node in result.data["assetNodes"]}


def _user_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in tags if not tag["key"].startswith("dagster/kind/")}


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"owners": ["nobody"]}, "owners[0]"),
        ({"tags": {"dagster/kind/csv": ""}}, "tags"),
        ({"tags": {"tier": "gold plated"}}, "tags.tier"),
        ({"tags": {"tier": 3}}, "tags.tier"),
    ],
)
def test_bad_owners_or_tags_exit_2_naming_file_and_field(
    project: Path, clean_env: dict[str, str], block: dict, field: str
) -> None:
    from tests.automation.helpers import DEMO_PIPELINE, extend_pipeline
    from tests.conftest import run_cli

    extend_pipeline(project, **block)
    result = run_cli(["validate", "movies_to_csv"], cwd=project, env=clean_env)
    assert result.returncode == 2, result.stderr
    assert f"{DEMO_PIPELINE}: {field}:" in result.stderr, result.stderr
    assert not (project / "logs").exists()
