"""`osiris-dagster parity` compares what two runs wrote, even when both wrote the same path."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from osiris_dagster.cli import cli
from tests.conftest import run_cli


def test_two_runs_in_one_project_are_compared_by_what_each_wrote(project: Path, clean_env: dict[str, str]) -> None:
    for _ in range(2):
        assert run_cli(["run", "movies_to_csv"], cwd=project, env=clean_env).returncode == 0
    first, second = sorted((project / "logs").glob("run_*"), key=lambda p: p.stat().st_mtime)
    same = CliRunner().invoke(cli, ["--project-dir", str(project), "parity", first.name, second.name])
    assert same.exit_code == 0, same.output
    assert "PARITY" in same.output and "output/actors.csv" in same.output

    csv = project / "output" / "actors.csv"
    csv.write_bytes(csv.read_bytes().replace(b"Zo", b"Zu", 1))
    changed = CliRunner().invoke(cli, ["--project-dir", str(project), "parity", first.name, second.name])
    assert changed.exit_code == 1, changed.output
    assert "output/actors.csv on disk" in changed.output and "NO PARITY" in changed.output
