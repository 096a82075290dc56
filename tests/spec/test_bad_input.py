"""Bad input: every malformed pipeline or connection file exits 2, names file and field, writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from osiris_dagster.cli import cli

GOOD_STEPS = [
    {
        "id": "extract-actors",
        "component": "sql.extractor",
        "mode": "read",
        "config": {"connection": "@sqlite.movies", "query": "SELECT * FROM actors"},
    },
    {
        "id": "write-actors-csv",
        "component": "filesystem.csv_writer",
        "mode": "write",
        "needs": ["extract-actors"],
        "config": {"path": "output/actors.csv"},
    },
]


def pipeline(**overrides: object) -> dict:
    document = {"oml_version": "0.1.0", "name": "bad-input", "steps": [dict(s) for s in GOOD_STEPS]}
    document.update(overrides)
    return document


def with_step(index: int, **changes: object) -> dict:
    document = pipeline()
    step = dict(document["steps"][index])
    for key, value in changes.items():
        if value is None:
            step.pop(key, None)
        else:
            step[key] = value
    document["steps"][index] = step
    return document


def with_config(index: int, **changes: object) -> dict:
    document = pipeline()
    config = dict(document["steps"][index]["config"])
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    document["steps"][index] = {**document["steps"][index], "config": config}
    return document


# (case id, pipeline document or raw text, connections text or None for the default, expected field, expected words)
PIPELINE_CASES = [
    (
        "missing-oml-version",
        {k: v for k, v in pipeline().items() if k != "oml_version"},
        None,
        "(top level)",
        "oml_version",
    ),
    ("wrong-oml-version", pipeline(oml_version="0.2.0"), None, "oml_version", "0.1.0"),
    ("forbidden-version", pipeline(version="1"), None, "version", "forbidden"),
    ("forbidden-tasks", pipeline(tasks=[]), None, "tasks", "forbidden"),
    ("forbidden-connectors", pipeline(connectors={}), None, "connectors", "forbidden"),
    ("missing-steps", {k: v for k, v in pipeline().items() if k != "steps"}, None, "(top level)", "steps"),
    ("empty-steps", pipeline(steps=[]), None, "steps", "should be non-empty"),
    ("step-without-id", with_step(0, id=None), None, "steps[0]", "'id' is a required property"),
    ("step-unknown-key", with_step(1, need=["extract-actors"]), None, "steps[1]", "need"),
    ("duplicate-ids", with_step(1, id="extract-actors"), None, "steps[1].id", "duplicate step id"),
    (
        "dangling-needs",
        with_step(1, needs=["extract-actor"]),
        None,
        "steps[1].needs[0]",
        "did you mean 'extract-actors'",
    ),
    ("needs-not-a-list", with_step(1, needs="extract-actors"), None, "steps[1].needs", "is not of type 'array'"),
    (
        "unknown-component",
        with_step(0, component="sql.extracter"),
        None,
        "steps[0].component",
        "did you mean 'sql.extractor'",
    ),
    ("mode-mismatch", with_step(0, mode="write"), None, "steps[0].mode", "'read' component"),
    ("wrong-family", with_step(0, component="mysql.extractor"), None, "steps[0].config.connection", "does not fit"),
    ("inline-password", with_config(0, password="hunter2-inline"), None, "steps[0].config.password", "inline secrets"),
    ("inline-api-key", with_config(1, service_api_key="k"), None, "steps[1].config.service_api_key", "inline secrets"),
    (
        "unknown-param",
        with_config(0, query="SELECT * FROM ${params.table}"),
        None,
        "steps[0].config",
        "unknown parameter 'table'",
    ),
    ("csv-unknown-key", with_config(1, delimeter=";"), None, "steps[1].config", "delimeter"),
    ("csv-missing-path", with_config(1, path=None), None, "steps[1].config", "'path' is a required property"),
    ("csv-bad-newline", with_config(1, newline="cr"), None, "steps[1].config.newline", "'cr'"),
    ("query-and-table", with_config(0, table="actors"), None, "steps[0].config", "valid under each of"),
    ("bad-reference", with_config(0, connection="sqlite.movies"), None, "steps[0].config.connection", "@family.alias"),
    (
        "unknown-alias",
        with_config(0, connection="@sqlite.nope"),
        None,
        "steps[0].config.connection",
        "unknown connection",
    ),
    ("bad-name", pipeline(name="Bad Name!"), None, "name", "does not match"),
    ("write-without-needs", with_step(1, needs=None), None, "steps[1].needs", "needs the step"),
    (
        "cycle",
        pipeline(
            steps=[
                GOOD_STEPS[0],
                {**GOOD_STEPS[1], "id": "a", "needs": ["b"]},
                {**GOOD_STEPS[1], "id": "b", "needs": ["a"]},
            ]
        ),
        None,
        ".needs",
        "cycle",
    ),
    ("bad-cron", pipeline(schedule={"cron": "61 * * * *"}), None, "schedule.cron", "not a valid cron"),
    ("bad-timezone", pipeline(schedule={"cron": "0 6 * * *", "timezone": "Mars/Olympus"}), None,
     "schedule.timezone", "unknown timezone"),
    ("bad-yaml", "oml_version: '0.1.0'\nname: x\nsteps: [\n  - id: a\n", None, "line", "invalid YAML"),
    ("not-a-mapping", "- just\n- a list\n", None, "(top level)", "mapping"),
]

CONNECTION_CASES = [
    ("connections-bad-yaml", "connections:\n  sqlite: {movies: {demo: movies}\n", "line", "invalid YAML"),
    ("connections-unknown-family", "connections:\n  oracle:\n    x: {url: 'oracle://'}\n", "connections", "oracle"),
    (
        "connections-unset-env",
        "connections:\n  sqlite:\n    movies: {url: '${OSIRIS_TEST_UNSET_URL_VAR}'}\n",
        "connections.sqlite.movies.url",
        "OSIRIS_TEST_UNSET_URL_VAR is not set",
    ),
    (
        "connections-mysql-missing-host",
        "connections:\n  sqlite:\n    movies: {demo: movies}\n  mysql:\n    m: {database: x, user: root}\n",
        "connections.mysql.m",
        "valid",
    ),
    (
        "connections-wrong-type",
        "connections:\n  sqlite:\n    movies: {demo: movies, default: 'yes'}\n",
        "connections.sqlite.movies.default",
        "not of type 'boolean'",
    ),
    ("connections-not-a-mapping", "connections: [1, 2]\n", "connections", "not of type 'object'"),
]


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _invoke(project: Path, pipeline_file: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--project-dir", str(project), "run", str(pipeline_file)])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.mark.parametrize(
    ("case", "document", "connections", "field", "words"), PIPELINE_CASES, ids=[c[0] for c in PIPELINE_CASES]
)
def test_malformed_pipeline_exits_2_naming_file_and_field_and_writes_nothing(
    project: Path, case: str, document: object, connections: str | None, field: str, words: str
) -> None:
    file = project / "assets" / f"{case}.yaml"
    file.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    before = _tree(project)
    code, output = _invoke(project, file)
    assert code == 2, output
    assert f"{file}:" in output, output
    assert field in output, output
    assert words in output, output
    assert _tree(project) == before, "bad input must write nothing"


@pytest.mark.parametrize(
    ("case", "connections", "field", "words"), CONNECTION_CASES, ids=[c[0] for c in CONNECTION_CASES]
)
def test_malformed_connections_exit_2_naming_file_and_field_and_write_nothing(
    project: Path, case: str, connections: str, field: str, words: str
) -> None:
    connections_file = project / "resources" / "connections.yaml"
    connections_file.write_text(connections)
    file = project / "assets" / "movies_to_csv.yaml"
    before = _tree(project)
    code, output = _invoke(project, file)
    assert code == 2, output
    assert str(connections_file) in output, output
    assert field in output, output
    assert words in output, output
    assert _tree(project) == before, "bad input must write nothing"


def test_good_pipeline_validates(project: Path) -> None:
    result = CliRunner().invoke(cli, ["--project-dir", str(project), "validate", "movies_to_csv"])
    assert result.exit_code == 0, result.output
    assert "10 steps" in result.output
