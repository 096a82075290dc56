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
