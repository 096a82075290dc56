"""Benchmark: per-step overhead of a wide pipeline (N/2 SQLite tables, each extracted and written to CSV).

Target (issue 11): a 300-table pipeline (600 steps) validates in <= 2 s and runs to success, and
the cost per step stays flat from 10 to 600 steps. Machines here are noisy, so the baseline is
measured in the same invocation: a 2-step pipeline (one table) run the same way. Per-step
overhead at N steps = (cost(N) - cost(2)) / (N - 2), in wall seconds and in CPU seconds
(user + sys of the run process, steadier than wall on a shared machine).

    .venv/bin/python bench/scale.py [--steps 10 100 600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROWS_PER_TABLE = 20


def make_project(root: Path, steps: int, *, absolute_db: bool = False) -> None:
    """A project whose pipeline ``wide`` has ``steps`` steps (an extract and a CSV write per table).

    ``absolute_db`` names the database by its absolute path: a remote run's sandbox receives the
    project's assets and resources, not its data files (the local sandbox backend shares the host's
    filesystem, so the path still resolves there)."""
    tables = steps // 2
    (root / "assets").mkdir(parents=True)
    (root / "resources").mkdir()
    db_path = (root / "shop.db").resolve() if absolute_db else "shop.db"
    (root / "resources" / "connections.yaml").write_text(f"connections:\n  sqlite:\n    shop: {{path: {db_path}}}\n")
    with sqlite3.connect(root / "shop.db") as db:
        for i in range(tables):
            db.execute(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT, v REAL)")
            db.executemany(f"INSERT INTO t{i} VALUES (?, ?, ?)", [(j, f"n{j}", j / 4) for j in range(ROWS_PER_TABLE)])
    pipeline_steps = []
    for i in range(tables):
        pipeline_steps.append(
            {
                "id": f"extract-t{i}",
                "component": "sql.extractor",
                "mode": "read",
                "config": {"connection": "@sqlite.shop", "query": f"SELECT * FROM t{i} ORDER BY id"},
            }
        )
        pipeline_steps.append(
            {
                "id": f"write-t{i}-csv",
                "component": "filesystem.csv_writer",
                "mode": "write",
                "needs": [f"extract-t{i}"],
                "config": {"path": f"output/t{i}.csv"},
            }
        )
    document = {"oml_version": "0.1.0", "name": "wide", "steps": pipeline_steps}
    (root / "assets" / "wide.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one command, which must succeed."""
    env = {**os.environ, "OSIRIS_PROJECT_DIR": str(cwd), "DAGSTER_HOME": str(cwd / "home")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 100, 600])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "osiris_dagster.cli"]
    runs: dict[int, list[tuple[float, float]]] = {}
    validations: dict[int, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as temp:
        for steps in [2, *args.steps]:
            root = Path(temp) / f"steps_{steps}"
            make_project(root, steps)
            timed([*cli, "run", "wide"], root)  # warm: storage created, caches hot
            validations[steps] = [timed([*cli, "validate", "wide"], root) for _ in range(args.repeat)]
            runs[steps] = [timed([*cli, "run", "wide"], root) for _ in range(args.repeat)]

    def median(samples: list[tuple[float, float]], index: int) -> float:
        return statistics.median(sample[index] for sample in samples)

    base_wall, base_cpu = median(runs[2], 0), median(runs[2], 1)
    print(
        f"{'steps':>6} {'validate s':>11} {'validate CPU s':>15} {'run s':>8} {'run CPU s':>10} "
        f"{'ms/step wall':>13} {'ms/step CPU':>12}"
    )
    for steps in [2, *args.steps]:
        wall, cpu = median(runs[steps], 0), median(runs[steps], 1)
        per_wall = (wall - base_wall) / (steps - 2) * 1000 if steps > 2 else float("nan")
        per_cpu = (cpu - base_cpu) / (steps - 2) * 1000 if steps > 2 else float("nan")
        print(
            f"{steps:>6} {median(validations[steps], 0):>11.2f} {median(validations[steps], 1):>15.2f} "
            f"{wall:>8.2f} {cpu:>10.2f} {per_wall:>13.1f} {per_cpu:>12.1f}"
        )
    print(f"\nmedian of {args.repeat}; per-step = (cost(N) - cost(2 steps)) / (N - 2); load: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
