"""One broken pipeline file cannot take down the others: the CLI loads only the pipeline it runs,
and the code location loads every valid pipeline while showing the broken file in Dagster."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
from pathlib import Path

import dagster as dg

from osiris_dagster.components.broken_pipeline import BROKEN_PIPELINES_METADATA_KEY
from osiris_dagster.definitions import build_definitions
from osiris_dagster.project import ProjectLayout
from tests.conftest import dagster_bin, run_cli

# Valid YAML, invalid pipeline: the CSV path leaves the project.
BROKEN = """\
oml_version: "0.1.0"
name: broken-one
steps:
- {id: extract, component: sql.extractor, mode: read, config: {connection: "@sqlite.movies", query: "SELECT 1 AS x"}}
- {id: write, component: filesystem.csv_writer, mode: write, needs: [extract], config: {path: ../../escape.csv}}
"""
# Not even YAML.
UNPARSABLE = "oml_version: '0.1.0'\nname: [unclosed\n"
# A valid pipeline that reuses movies_to_csv's name (its job would collide with the real one).
SAME_NAME = (Path(__file__).resolve().parents[2] / "assets" / "movies_to_csv.yaml").read_text()


def _break(project: Path) -> None:
    (project / "assets" / "broken_one.yaml").write_text(BROKEN)
    (project / "assets" / "unparsable.yaml").write_text(UNPARSABLE)
    (project / "assets" / "zz_copy_of_movies.yaml").write_text(SAME_NAME)


def test_run_and_validate_load_only_the_named_pipeline(project: Path, clean_env: dict[str, str]) -> None:
    _break(project)
    validated = run_cli(["validate", "movies_to_csv"], cwd=project, env=clean_env)
    assert validated.returncode == 0, validated.stderr
    result = run_cli(["run", "movies_to_csv"], cwd=project, env=clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    # The rows came from the demo database: compare with SQLite's own answer.
    with sqlite3.connect(project / ".osiris" / "demo" / "movies.sqlite") as db:
        (expected,) = db.execute("SELECT count(*) FROM actors").fetchone()
    with open(project / "output" / "actors.csv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) - 1 == expected
    broken = run_cli(["validate", "broken_one"], cwd=project, env=clean_env)
    assert broken.returncode == 2
    assert f"{project / 'assets' / 'broken_one.yaml'}: steps[1].config.path:" in broken.stderr
    assert not (project.parent / "escape.csv").exists()


def test_code_location_loads_valid_pipelines_and_shows_each_broken_file(project: Path) -> None:
    _break(project)
    defs = build_definitions(ProjectLayout(project))
    repository = defs.get_repository_def()
    jobs = {job.name for job in repository.get_all_jobs()}
    assert {"movies_to_csv", "movies_to_supabase"} <= jobs
    assert {"broken_broken_one", "broken_unparsable", "broken_zz_copy_of_movies"} <= jobs
    broken = defs.metadata[BROKEN_PIPELINES_METADATA_KEY].value
    assert set(broken) == {"assets/broken_one.yaml", "assets/unparsable.yaml", "assets/zz_copy_of_movies.yaml"}
    assert broken["assets/broken_one.yaml"].startswith("steps[1].config.path: '../../escape.csv' resolves to")
    assert "invalid YAML" in broken["assets/unparsable.yaml"]
    assert "job 'movies_to_csv' is already defined by movies_to_csv.yaml" in broken["assets/zz_copy_of_movies.yaml"]
    spec = repository.asset_graph.get(dg.AssetKey(["broken_pipelines", "broken_broken_one"]))
    assert spec.description.startswith("BROKEN pipeline file assets/broken_one.yaml: steps[1].config.path")
    # Materializing the broken asset fails with the file's error instead of doing anything.
    result = dg.materialize([repository.assets_defs_by_key[spec.key]], raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "assets/broken_one.yaml" in failure.message and "escape.csv" in failure.message


def test_dagster_cli_lists_valid_jobs_and_the_broken_file(project: Path, clean_env: dict[str, str]) -> None:
    _break(project)
    result = subprocess.run(
        [dagster_bin(), "job", "list", "-w", "workspace.yaml"],
        cwd=project,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    listed = {line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("Job:")}
    assert {"movies_to_csv", "movies_to_supabase", "broken_broken_one", "broken_unparsable"} <= listed
    assert "BROKEN pipeline file assets/broken_one.yaml" in result.stdout
    assert "broken pipeline file assets/unparsable.yaml" in result.stderr  # the code server's warning
