"""`osiris-dagster init DIR`: a whole project or none, never over an existing one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from osiris_dagster.project_init import project_files

FILES = sorted(project_files("x"))


def start_init(directory: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "osiris_dagster.cli", "init", str(directory)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def written(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_two_concurrent_inits_of_one_folder_make_one_project_and_one_refusal(tmp_path: Path) -> None:
    target = tmp_path / "shop"
    first, second = start_init(target, tmp_path), start_init(target, tmp_path)
    results = sorted([(p.wait(timeout=120), p.communicate()[1]) for p in (first, second)])
    assert [code for code, _ in results] == [0, 2], results
    assert "already exists" in results[1][1]
    assert written(target) == FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop"], "no staging folder left behind"


def test_a_killed_init_leaves_the_whole_project_or_none(tmp_path: Path) -> None:
    for attempt, delay in enumerate((0.2, 0.6, 1.0, 1.5, 2.5)):
        target = tmp_path / f"p{attempt}"
        process = start_init(target, tmp_path)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert not target.exists() or written(target) == FILES, (delay, written(target))
    # Debris of a killed init is recognisable by name; a new init of the same folder works.
    assert all(p.name.startswith(("p", ".p")) for p in tmp_path.iterdir())
    assert start_init(tmp_path / "p0", tmp_path).wait(timeout=120) in (0, 2)


def test_init_into_an_existing_file_refuses_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    (target / "assets").mkdir(parents=True)
    (target / "assets" / "movies_to_csv.yaml").write_text("mine\n")
    process = start_init(target, tmp_path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "assets/movies_to_csv.yaml: already exists" in stderr, stderr
    assert written(target) == ["assets/movies_to_csv.yaml"]
    assert (target / "assets" / "movies_to_csv.yaml").read_text() == "mine\n"
