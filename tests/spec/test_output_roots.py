"""Writing outside the project works only into the folders the project declares in osiris.yaml."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import yaml

from tests.conftest import run_cli


def _pipeline(first: str, second: str) -> str:
    def steps(table: str, path: str) -> list[dict]:
        return [
            {
                "id": f"extract-{table}",
                "component": "sql.extractor",
                "mode": "read",
                "config": {"connection": "@sqlite.movies", "query": f"SELECT * FROM {table} ORDER BY id"},
            },
            {
                "id": f"write-{table}",
                "component": "filesystem.csv_writer",
                "mode": "write",
                "needs": [f"extract-{table}"],
                "config": {"path": path},
            },
        ]

    document = {"oml_version": "0.1.0", "name": "exports", "steps": steps("actors", first) + steps("movies", second)}
    return yaml.safe_dump(document, sort_keys=False)


def test_declared_output_roots_allow_absolute_and_linked_paths(
    project: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    absolute_root, linked_root = tmp_path / "exports", tmp_path / "shared"
    absolute_root.mkdir()
    linked_root.mkdir()
    (project / "output").mkdir()
    (project / "output" / "shared").symlink_to(linked_root, target_is_directory=True)
    (project / "assets" / "exports.yaml").write_text(
        _pipeline(str(absolute_root / "actors.csv"), "output/shared/movies.csv")
    )

    refused = run_cli(["validate", "exports"], cwd=project, env=clean_env)
    assert refused.returncode == 2 and "steps[1].config.path" in refused.stderr, refused.stderr
    assert "output_roots" in refused.stderr

    # One absolute root, one relative to the project folder (where the link leads).
    (project / "osiris.yaml").write_text(yaml.safe_dump({"output_roots": [str(absolute_root), "../shared"]}))
    result = run_cli(["run", "exports"], cwd=project, env=clean_env)
    assert result.returncode == 0, result.stdout + result.stderr

    with sqlite3.connect(project / ".osiris" / "demo" / "movies.sqlite") as db:
        for table, written in (("actors", absolute_root / "actors.csv"), ("movies", linked_root / "movies.csv")):
            expected = [[str(v) for v in row] for row in db.execute(f"SELECT id FROM {table} ORDER BY id")]
            with open(written, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            assert [row[:1] for row in rows[1:]] == expected, table
    assert not (project / "output" / "actors.csv").exists()


def test_a_path_escaping_through_run_config_params_fails_the_step_and_writes_nothing(
    project: Path, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The launchpad's run config can change ${params.x} after validation: the step checks again."""
    from dagster import DagsterInstance

    from osiris_dagster.definitions import build_definitions
    from osiris_dagster.project import ProjectLayout

    document = yaml.safe_load(_pipeline("output/${params.folder}/actors.csv", "output/movies.csv"))
    document["params"] = {"folder": "exports"}
    (project / "assets" / "exports.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv("OSIRIS_PROJECT_DIR", str(project))
    job = build_definitions(ProjectLayout(project)).resolve_job_def("exports")
    run_config = {"resources": {"osiris_params": {"config": {"values": {"folder": "../../escaped"}}}}}
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "steps[1].config.path" in failure.step_failure_data.error.message
    assert "outside the project" in failure.step_failure_data.error.message
    assert not (tmp_path / "escaped").exists()
