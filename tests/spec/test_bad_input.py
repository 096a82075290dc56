"""Bad input: every malformed pipeline or connection file exits 2, names file and field, writes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


DUPLICATE_NAME = "oml_version: '0.1.0'\nname: first\nname: second\nsteps: []\n"
DUPLICATE_PATH = """\
oml_version: "0.1.0"
name: duplicate-path
steps:
- {id: extract-actors, component: sql.extractor, mode: read, config: {query: "SELECT * FROM actors"}}
- id: write-actors-csv
  component: filesystem.csv_writer
  mode: write
  needs: [extract-actors]
  config:
    path: output/actors.csv
    path: ../../actors.csv
"""
DUPLICATE_ID = """\
oml_version: "0.1.0"
name: duplicate-id
steps:
- id: extract-actors
  id: extract-directors
  component: sql.extractor
  mode: read
  config: {query: "SELECT * FROM actors"}
"""
SUPABASE_CONNECTIONS = """\
connections:
  sqlite:
    movies: {demo: movies, default: true}
  supabase:
    main: {url: "http://127.0.0.1:9", service_role_key: "${OSIRIS_TEST_UNUSED_KEY:-not-a-key}", default: true}
"""


def two_writers(first: str, second: str) -> dict:
    document = with_config(1, path=first)
    document["steps"].append({**GOOD_STEPS[1], "id": "write-again", "config": {"path": second}})
    return document


def supabase_writers(first: str | None, second: str | None) -> dict:
    def writer(step_id: str, connection: str | None) -> dict:
        config = {"table": "movies"} | ({"connection": connection} if connection else {})
        return {
            "id": step_id,
            "component": "supabase.writer",
            "mode": "write",
            "needs": ["extract-actors"],
            "config": config,
        }

    return pipeline(steps=[GOOD_STEPS[0], writer("write-a", first), writer("write-b", second)])


READ_WITH_NEEDS = pipeline(steps=[GOOD_STEPS[0], {**GOOD_STEPS[0], "id": "extract-2", "needs": ["extract-actors"]}])
CSV_TWO_INPUTS = pipeline(
    steps=[
        GOOD_STEPS[0],
        {**GOOD_STEPS[0], "id": "extract-2"},
        {**GOOD_STEPS[1], "needs": ["extract-actors", "extract-2"]},
    ]
)

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
    (
        "bad-timezone",
        pipeline(schedule={"cron": "0 6 * * *", "timezone": "Mars/Olympus"}),
        None,
        "schedule.timezone",
        "unknown timezone",
    ),
    ("bad-yaml", "oml_version: '0.1.0'\nname: x\nsteps: [\n  - id: a\n", None, "line", "invalid YAML"),
    ("not-a-mapping", "- just\n- a list\n", None, "(top level)", "mapping"),
    ("empty-file", "", None, "(top level)", "mapping"),
    ("not-utf8", b"oml_version: '0.1.0'\nname: caf\xe9\n", None, "", "not UTF-8"),
    # Duplicate YAML keys: PyYAML would keep the last one without a word.
    ("duplicate-top-level-key", DUPLICATE_NAME, None, "name", "duplicate key 'name' at line 3 (first at line 2)"),
    ("duplicate-config-key", DUPLICATE_PATH, None, "steps[1].config.path", "duplicate key 'path'"),
    ("duplicate-step-key", DUPLICATE_ID, None, "steps[0].id", "duplicate key 'id'"),
    # Write paths: inside the project, a file, a known encoding.
    ("path-parent-escape", with_config(1, path="../../x.csv"), None, "steps[1].config.path", "outside the project"),
    ("path-absolute", with_config(1, path="/tmp/osiris-escape.csv"), None, "steps[1].config.path", "output_roots"),
    ("path-home", with_config(1, path="~/osiris-escape.csv"), None, "steps[1].config.path", "outside the project"),
    ("path-directory-slash", with_config(1, path="output/"), None, "steps[1].config.path", "is a directory"),
    ("path-existing-directory", with_config(1, path="assets"), None, "steps[1].config.path", "is a directory"),
    ("path-dot", with_config(1, path="."), None, "steps[1].config.path", "is a directory"),
    ("path-state-dir", with_config(1, path=".osiris/x.csv"), None, "steps[1].config.path", "belongs to osiris"),
    ("path-logs-dir", with_config(1, path="logs/run_x/x.csv"), None, "steps[1].config.path", "belongs to osiris"),
    (
        "path-escape-through-param",
        {**with_config(1, path="${params.dir}/x.csv"), "params": {"dir": "../.."}},
        None,
        "steps[1].config.path",
        "outside the project",
    ),
    ("unknown-encoding", with_config(1, encoding="utf-9"), None, "steps[1].config.encoding", "unknown encoding"),
    ("binary-encoding", with_config(1, encoding="base64"), None, "steps[1].config.encoding", "not a text encoding"),
    # Two writers on one target.
    ("two-writers-one-file", two_writers("output/a.csv", "output/a.csv"), None, "steps[2].config.path", "steps[1]"),
    (
        "two-writers-one-file-after-resolution",
        two_writers("output/a.csv", "./output/../output/a.csv"),
        None,
        "steps[2].config.path",
        "one target, one writer",
    ),
    (
        "two-writers-one-supabase-table",
        supabase_writers("@supabase.main", None),
        SUPABASE_CONNECTIONS,
        "steps[2].config.table",
        "public.movies on @supabase.main",
    ),
    # The JSON Schema and the step rules, one field each.
    ("step-id-pattern", with_step(0, id="1-extract"), None, "steps[0].id", "does not match"),
    ("mode-unknown", with_step(0, mode="delete"), None, "steps[0].mode", "'delete'"),
    ("component-pattern", with_step(0, component="SQL-extractor"), None, "steps[0].component", "does not match"),
    ("config-not-object", with_step(0, config="SELECT 1"), None, "steps[0].config", "not of type 'object'"),
    ("needs-repeated", with_step(1, needs=["extract-actors", "extract-actors"]), None, "steps[1].needs", "non-unique"),
    ("read-step-with-needs", READ_WITH_NEEDS, None, "steps[1].needs", "a read step takes no inputs"),
    ("csv-two-inputs", CSV_TWO_INPUTS, None, "steps[2].needs", "takes 1 step(s)"),
    ("batch-rows-zero", with_config(0, batch_rows=0), None, "steps[0].config.batch_rows", "minimum"),
    ("empty-query", with_config(0, query=""), None, "steps[0].config.query", "non-empty"),
    ("table-injection", with_config(0, query=None, table="actors; DROP TABLE x"), None, "steps[0].config", "table"),
    (
        "bad-incremental-cursor",
        with_config(0, incremental={"cursor": "a b"}),
        None,
        "steps[0].config.incremental",
        "a b",
    ),
    ("csv-long-delimiter", with_config(1, delimiter=";;"), None, "steps[1].config.delimiter", "too long"),
    ("csv-header-not-bool", with_config(1, header="yes"), None, "steps[1].config.header", "'boolean'"),
    ("csv-bad-quoting", with_config(1, quoting="none"), None, "steps[1].config.quoting", "'none'"),
    ("csv-takes-no-connection", with_config(1, connection="@sqlite.movies"), None, "steps[1].config", "connection"),
    ("params-not-scalar", pipeline(params={"x": [1, 2]}), None, "params.x", "is not of type"),
    ("unknown-top-level-key", pipeline(owner="me"), None, "(top level)", "owner"),
    ("description-not-text", pipeline(description=5), None, "description", "not of type 'string'"),
    ("schedule-without-cron", pipeline(schedule={"timezone": "UTC"}), None, "schedule", "'cron' is a required"),
    ("sensor-unknown-key", pipeline(sensor={"on_change": {}}), None, "sensor", "on_change"),
    ("family-unknown", with_config(0, connection="@oracle.x"), None, "steps[0].config.connection", "does not fit"),
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
        "connections-mysql-unknown-option",  # a misspelt TLS flag must not silently mean "do not verify"
        "connections:\n  sqlite:\n    movies: {demo: movies}\n  mysql:\n"
        "    m: {host: h, database: x, options: {ssl_ca: ca.pem, ssl_verify_certs: true}}\n",
        "connections.mysql.m.options",
        "'ssl_verify_certs' is not one of",
    ),
    (
        "connections-wrong-type",
        "connections:\n  sqlite:\n    movies: {demo: movies, default: 'yes'}\n",
        "connections.sqlite.movies.default",
        "not of type 'boolean'",
    ),
    ("connections-not-a-mapping", "connections: [1, 2]\n", "connections", "not of type 'object'"),
    (
        "connections-duplicate-alias",
        "connections:\n  sqlite:\n    movies: {demo: movies}\n    movies: {path: other.sqlite}\n",
        "connections.sqlite.movies",
        "duplicate key 'movies' at line 4 (first at line 3)",
    ),
    (
        "connections-duplicate-field",
        "connections:\n  sqlite:\n    movies:\n      demo: movies\n      demo: movies\n",
        "connections.sqlite.movies.demo",
        "duplicate key 'demo'",
    ),
    (
        "connections-unknown-field",
        "connections:\n  sqlite:\n    movies: {demo: movies, pasword: x}\n",
        "connections.sqlite.movies",
        "pasword",
    ),
    (
        "connections-sqlite-path-and-demo",
        "connections:\n  sqlite:\n    movies: {demo: movies, path: x.sqlite}\n",
        "connections.sqlite.movies",
        "valid under each of",
    ),
]

# Through `--param movies_db=mysql.movies`: (case, environment, connections text or None, field, words).
MYSQL_CASES = [
    ("port-from-env-not-a-number", {"MYSQL_PORT": "abc"}, None, "connections.mysql.movies.port", "${MYSQL_PORT}"),
    ("port-from-env-out-of-range", {"MYSQL_PORT": "70000"}, None, "connections.mysql.movies.port", "not a port number"),
    ("port-from-env-zero", {"MYSQL_PORT": "0"}, None, "connections.mysql.movies.port", "not a port number"),
    (
        "port-literal-not-a-number",
        {},
        "connections:\n  mysql:\n    movies: {host: 127.0.0.1, port: 'x3306', database: d}\n",
        "connections.mysql.movies.port",
        "'x3306' is not a port number",
    ),
    (
        "password-variable-unset",
        {},
        "connections:\n  mysql:\n    movies: {host: 127.0.0.1, database: d, password: '${OSIRIS_TEST_UNSET_PW}'}\n",
        "connections.mysql.movies.password",
        "OSIRIS_TEST_UNSET_PW is not set",
    ),
]

# (case, --param arguments, pipeline file name, field, words)
PARAM_CASES = [
    (
        "param-undeclared-did-you-mean",
        ["movies_bd=mysql.movies"],
        "movies_to_csv",
        "params",
        "did you mean 'movies_db'",
    ),
    ("param-undeclared", ["limit=5"], "movies_to_csv", "params", "--param 'limit' is not declared"),
    ("param-without-value", ["movies_db"], "movies_to_csv", "movies_db", "expected NAME=VALUE"),
]

# (case, osiris.yaml text, field, words)
SETTINGS_CASES = [
    ("settings-roots-not-a-list", "output_roots: /srv/exports\n", "output_roots", "not of type 'array'"),
    ("settings-unknown-key", "output_root: [/srv]\n", "(top level)", "output_root"),
    ("settings-duplicate-key", "output_roots: [a]\noutput_roots: [b]\n", "output_roots", "duplicate key"),
]


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty DAGSTER_HOME that must stay empty: bad input starts no Dagster run."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    for name in [n for n in os.environ if n.startswith(("OSIRIS_", "MYSQL_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    yield home
    assert not any(home.iterdir()), "bad input must not create Dagster storage or a run"


def _invoke(
    project: Path, pipeline_file: Path | str, args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--project-dir", str(project), "run", str(pipeline_file), *args], env=env)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def _assert_refused(code: int, output: str, file: Path | str, field: str, words: str) -> None:
    assert code == 2, output
    assert output.startswith("error: "), output
    assert f"{file}:" in output, output
    assert f": {field}" in output or field in output, output
    assert words in output, output


@pytest.mark.parametrize(
    ("case", "document", "connections", "field", "words"), PIPELINE_CASES, ids=[c[0] for c in PIPELINE_CASES]
)
def test_malformed_pipeline_exits_2_naming_file_and_field_and_writes_nothing(
    project: Path, dagster_home: Path, case: str, document: object, connections: str | None, field: str, words: str
) -> None:
    file = project / "assets" / f"{case}.yaml"
    if isinstance(document, bytes):
        file.write_bytes(document)
    else:
        file.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    if connections is not None:
        (project / "resources" / "connections.yaml").write_text(connections)
    before = _tree(project)
    code, output = _invoke(project, file)
    _assert_refused(code, output, file, field, words)
    assert _tree(project) == before, "bad input must write nothing"


@pytest.mark.parametrize(
    ("case", "connections", "field", "words"), CONNECTION_CASES, ids=[c[0] for c in CONNECTION_CASES]
)
def test_malformed_connections_exit_2_naming_file_and_field_and_write_nothing(
    project: Path, dagster_home: Path, case: str, connections: str, field: str, words: str
) -> None:
    connections_file = project / "resources" / "connections.yaml"
    connections_file.write_text(connections)
    file = project / "assets" / "movies_to_csv.yaml"
    before = _tree(project)
    code, output = _invoke(project, file)
    _assert_refused(code, output, connections_file, field, words)
    assert _tree(project) == before, "bad input must write nothing"


def test_missing_connections_file_exits_2(project: Path, dagster_home: Path) -> None:
    connections_file = project / "resources" / "connections.yaml"
    connections_file.unlink()
    before = _tree(project)
    code, output = _invoke(project, project / "assets" / "movies_to_csv.yaml")
    _assert_refused(code, output, connections_file, "", "connections file not found")
    assert _tree(project) == before


@pytest.mark.parametrize(
    ("case", "environ", "connections", "field", "words"), MYSQL_CASES, ids=[c[0] for c in MYSQL_CASES]
)
def test_bad_connection_value_is_refused_at_validation_naming_variable(
    project: Path, dagster_home: Path, case: str, environ: dict, connections: str | None, field: str, words: str
) -> None:
    connections_file = project / "resources" / "connections.yaml"
    if connections is not None:
        connections_file.write_text(connections)
    before = _tree(project)
    code, output = _invoke(project, "movies_to_csv", ("--param", "movies_db=mysql.movies"), env=environ)
    _assert_refused(code, output, connections_file, field, words)
    assert "int()" not in output and "Traceback" not in output, output
    assert _tree(project) == before


@pytest.mark.parametrize(("case", "args", "name", "field", "words"), PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
def test_bad_param_is_refused_with_a_hint(
    project: Path, dagster_home: Path, case: str, args: list, name: str, field: str, words: str
) -> None:
    before = _tree(project)
    params = [item for arg in args for item in ("--param", arg)]
    code, output = _invoke(project, name, tuple(params))
    assert code == 2, output
    assert field in output and words in output, output
    if "not declared" in words or "did you mean" in words:
        assert f"{project / 'assets' / 'movies_to_csv.yaml'}: params:" in output, output
    assert _tree(project) == before


@pytest.mark.parametrize(("case", "settings", "field", "words"), SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_malformed_project_settings_exit_2(
    project: Path, dagster_home: Path, case: str, settings: str, field: str, words: str
) -> None:
    settings_file = project / "osiris.yaml"
    settings_file.write_text(settings)
    before = _tree(project)
    code, output = _invoke(project, "movies_to_csv")
    _assert_refused(code, output, settings_file, field, words)
    assert _tree(project) == before


def test_write_path_through_a_symlink_leading_out_is_refused(project: Path, dagster_home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "output").mkdir()
    (project / "output" / "link").symlink_to(outside, target_is_directory=True)
    file = project / "assets" / "via_link.yaml"
    file.write_text(yaml.safe_dump(with_config(1, path="output/link/actors.csv")))
    before = _tree(project)
    code, output = _invoke(project, file)
    _assert_refused(code, output, file, "steps[1].config.path", str(outside))
    assert _tree(project) == before and not any(outside.iterdir())


def test_corpus_has_at_least_60_cases() -> None:
    total = len(PIPELINE_CASES) + len(CONNECTION_CASES) + len(MYSQL_CASES) + len(PARAM_CASES) + len(SETTINGS_CASES)
    assert total + 2 >= 60, total


def test_good_pipeline_validates(project: Path) -> None:
    result = CliRunner().invoke(cli, ["--project-dir", str(project), "validate", "movies_to_csv"])
    assert result.exit_code == 0, result.output
    assert "10 steps" in result.output
