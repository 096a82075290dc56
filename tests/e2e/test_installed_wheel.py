"""A user who installs the wheel (not the repository) gets a working product and a working project.

The wheel is built from this checkout and installed, not editable, into a fresh venv; everything
then runs in a folder outside the repository with a clean environment, so nothing can resolve to
the checkout. Expected rows come from the demo's SQLite file read with the standard library, and
the definitions dg sees from dg's own JSON listing.

Speed: the dependency wheels are built once per constraints.txt into a cache folder
(~80 s the first time on 2 busy cores) and installed with `--no-index`; the product's own wheel is
built fresh on every run.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.demo_expectations import DEMO_TABLES, REPO, assert_session_valid

WHEELHOUSE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "osiris-dagster-tests"


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result


def assert_csv_has_the_source_rows(path: Path, source: sqlite3.Connection, table: str) -> None:
    """Header, row count and key column as SQLite itself prints them (cell formatting is the values
    suites' business; here: the right rows landed in the right file)."""
    cursor = source.execute(DEMO_TABLES[table])
    columns = [d[0] for d in cursor.description]
    keys = [str(row[0]) for row in cursor.fetchall()]
    with path.open(newline="", encoding="utf-8") as handle:
        parsed = list(csv.reader(handle))
    assert parsed[0] == columns, path
    assert [row[0] for row in parsed[1:]] == keys, path


def user_env(tmp: Path, venv: Path) -> dict[str, str]:
    """A shell with only the fresh venv on PATH: no checkout on PYTHONPATH, no developer settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSIRIS_", "MYSQL_", "DAGSTER_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    env["DAGSTER_HOME"] = str(tmp / "dagster_home")
    (tmp / "dagster_home").mkdir(exist_ok=True)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(fresh venv, the built wheel)."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # Built from a copy of the sources, so the build leaves no build/ or egg-info in the checkout;
    # without the checkout's in-place builds (*.so), so the wheel's C extensions are its own.
    source = tmp / "source"
    shutil.copytree(
        REPO / "osiris_dagster", source / "osiris_dagster", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    run([*pip, "wheel", "-q", "--no-deps", "-w", str(dist), str(source)], cwd=tmp, env=env)
    (wheel,) = dist.glob("osiris_dagster-*.whl")

    constraints = (REPO / "constraints.txt").read_bytes()
    wheelhouse = WHEELHOUSE_CACHE / f"wheelhouse-{hashlib.sha256(constraints).hexdigest()[:16]}"
    if not (wheelhouse / ".complete").exists():
        run(
            [*pip, "wheel", "-q", "-c", str(REPO / "constraints.txt"), "-w", str(wheelhouse), f"{wheel}[dg]"],
            cwd=tmp,
            env=env,
        )
        (wheelhouse / wheel.name).unlink(missing_ok=True)  # only dependencies are cached
        (wheelhouse / ".complete").touch()

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env)
    run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wheelhouse), f"{wheel}[dg]"],
        cwd=tmp,
        env=env,
    )
    yield venv, wheel


@pytest.mark.e2e
def test_wheel_carries_the_schemas_and_the_starter_project(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for schema in (REPO / "schemas").glob("*.schema.json"):
        assert f"osiris_dagster/schemas/{schema.name}" in names, schema.name
    assert "osiris_dagster/starter/assets/movies_to_csv.yaml" in names
    assert "osiris_dagster/starter/resources/connections.yaml" in names
    assert not any(name.startswith(("assets/", "resources/", "tests/")) for name in names)


@pytest.mark.e2e
def test_wheel_carries_the_built_c_modules(installed: tuple[Path, Path], tmp_path: Path) -> None:
    """The MySQL row reader and the CSV formatter are C extensions built into the wheel: without
    them every MySQL read would fall back to pymysql (~10x the CPU, one warning to show for it) and
    every CSV write to the pyarrow kernels (~5x, silently)."""
    venv, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    modules = ("osiris_dagster.sources._mysql_rows", "osiris_dagster.formats._csv_rows")
    for module in modules:
        assert fnmatch.filter(names, module.replace(".", "/") + "*.so"), names
    imported = run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib, sys\nfor m in sys.argv[1:]: print(importlib.import_module(m).__file__)",
            *modules,
        ],
        cwd=tmp_path,
        env=user_env(tmp_path, venv),
    )
    assert [line.startswith(str(venv)) for line in imported.stdout.splitlines()] == [True, True], imported.stdout


@pytest.mark.e2e
def test_installed_wheel_inits_a_project_that_runs_demo_dagster_and_dg(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    venv, _ = installed
    env = user_env(tmp_path, venv)
    bin_ = venv / "bin"
    where = run(
        [str(bin_ / "python"), "-c", "import osiris_dagster; print(osiris_dagster.__file__)"], cwd=tmp_path, env=env
    )
    assert where.stdout.startswith(str(venv)), where.stdout

    project = tmp_path / "my-project"
    run([str(bin_ / "osiris-dagster"), "init", str(project)], cwd=tmp_path, env=env)
    for name in ("assets/movies_to_csv.yaml", "resources/connections.yaml", "workspace.yaml", "pyproject.toml"):
        assert (project / name).is_file(), name
    refused = subprocess.run(
        [str(bin_ / "osiris-dagster"), "init", str(project)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "already exists" in refused.stderr, refused.stderr

    # 1. osiris-dagster demo: exact CSVs, checked against the SQLite file read with sqlite3.
    run([str(bin_ / "osiris-dagster"), "demo"], cwd=project, env=env)
    source = sqlite3.connect(project / ".osiris" / "demo" / "movies.sqlite")
    for table in DEMO_TABLES:
        assert_csv_has_the_source_rows(project / "output" / f"{table}.csv", source, table)

    # 2. dagster job execute on the code location (1.13's `job execute` takes no -w): a second session.
    execute = [str(bin_ / "dagster"), "job", "execute", "-m", "osiris_dagster.definitions", "-j", "movies_to_csv"]
    run(execute, cwd=project, env=env)
    sessions = sorted((project / "logs").glob("run_*"), key=lambda p: p.stat().st_mtime)
    assert len(sessions) == 2
    assert assert_session_valid(sessions[-1], steps=10)["ok"] is True

    # 3. dg: a pipeline declared as a component instance in defs.yaml joins the assets/ pipelines.
    instance = project / "defs" / "actors_only"
    instance.mkdir()
    pipeline = (project / "assets" / "movies_to_csv.yaml").read_text()
    pipeline = pipeline.replace("name: movies-to-csv", "name: actors-only").replace("output/", "output/actors_only/")
    (instance / "pipeline.yaml").write_text(pipeline + "schedule: {cron: '0 6 * * *'}\n")
    (instance / "defs.yaml").write_text(
        "type: osiris_dagster.components.pipeline_component.OmlPipelineComponent\n"
        "attributes:\n  pipeline_file: pipeline.yaml\n"
    )
    listed = json.loads(run([str(bin_ / "dg"), "list", "defs", "--json"], cwd=project, env=env).stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert {"movies_to_csv/extract_actors", "actors_only/write_reviews_csv"} <= assets
    checks = {c["key"] for c in listed["asset_checks"]}
    assert "actors_only/write_actors_csv:row_count_matches_extract" in checks
    assert {j["name"] for j in listed["jobs"]} == {"movies_to_csv", "actors_only"}
    assert [s["name"] for s in listed["schedules"]] == ["actors_only_schedule"]
    assert "osiris_run_alert" in {s["name"] for s in listed["sensors"]}
    components = run([str(bin_ / "dg"), "list", "components", "--json"], cwd=project, env=env).stdout
    assert "osiris_dagster.components.pipeline_component.OmlPipelineComponent" in components

    run(
        [str(bin_ / "dg"), "launch", "--assets", "key:actors_only/extract_actors+"],
        cwd=project,
        env=env,
    )
    assert_csv_has_the_source_rows(project / "output" / "actors_only" / "actors.csv", source, "actors")
    assert not (project / "output" / "actors_only" / "movies.csv").exists(), "dg launch ran more than it selected"


@pytest.mark.e2e
def test_dg_lists_the_definitions_of_this_repository(clean_env: dict[str, str]) -> None:
    """The repository itself is a dg project: dg's own JSON listing shows its code location."""
    dg_bin = str(Path(sys.executable).with_name("dg"))
    listed = json.loads(run([dg_bin, "list", "defs", "--json"], cwd=REPO, env=clean_env).stdout)
    pipelines = sorted(path.stem for path in (REPO / "assets").glob("*.yaml"))
    assert sorted(job["name"] for job in listed["jobs"]) == pipelines
    assets = {asset["asset_key"] for asset in listed["assets"]}
    assert {"movies_to_csv/source/actors", "movies_to_csv/extract_actors", "movies_to_csv/write_actors_csv"} <= assets
    extract = next(a for a in listed["assets"] if a["asset_key"] == "movies_to_csv/extract_actors")
    assert extract["dependency_keys"] == ["movies_to_csv/source/actors"]
    assert "movies_to_csv/write_actors_csv:row_count_matches_extract" in {c["key"] for c in listed["asset_checks"]}
    assert "osiris_run_alert" in {sensor["name"] for sensor in listed["sensors"]}


@pytest.mark.e2e
def test_dg_launch_materializes_a_selection_with_the_repository_settings(
    project: Path, clean_env: dict[str, str]
) -> None:
    """`dg launch --assets` with this repository's [tool.dg] settings, in a copy of its project files
    (so the checkout gets no output/): the selection, and only it, lands."""
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    dg_bin = str(Path(sys.executable).with_name("dg"))
    run([dg_bin, "launch", "--assets", "key:movies_to_csv/extract_directors+"], cwd=project, env=clean_env)
    source = sqlite3.connect(project / ".osiris" / "demo" / "movies.sqlite")
    assert_csv_has_the_source_rows(project / "output" / "directors.csv", source, "directors")
    assert sorted(path.name for path in (project / "output").iterdir()) == ["directors.csv"]
    (session,) = (project / "logs").glob("run_*")
    assert assert_session_valid(session, steps=2)["ok"] is True
