"""Benchmark: MariaDB table -> CSV, this product's data path against the ``mysql`` C client.

Not a test: run it by hand on an idle machine.

    .venv/bin/python bench/extract_csv.py              # 1,000,000 and 5,000,000 rows
    .venv/bin/python bench/extract_csv.py --rows 1000000 --runs 3

For each size it creates (once, in database ``osiris_bench``) a table with the columns of
/work/shared/notes/perf-baselines.md, generated server-side from MariaDB's Sequence engine, then
times, as fresh subprocesses (wall time including interpreter start and imports; peak RSS of the
child from ``wait4``):

* ``mysql --batch --quick -e 'SELECT * ...' > file``   (the baseline)
* the product's read + write steps as one run does them: ``extract_to_staging`` with the CSV
  prepared while the table is extracted (``targets.csv_prepared``), then the write step adopting it;
* the same two steps run apart (``extract_to_staging``, then ``write_csv`` from the staged file):
  what a run that materializes only the writer does.

and prints the median of ``--runs`` runs, the ratio product / mysql, the peak RSS, the CPU
seconds of the child and of the MariaDB server during it (``/proc/<mariadbd>/stat``), and the
load average before and after.
Targets: ratio <= 1.0; peak RSS <= 200 MB and not growing with the row count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST, PORT, USER = "127.0.0.1", 3306, "root"
DATABASE = "osiris_bench"
MYSQL = shutil.which("mysql") or "/usr/bin/mysql"
REPO = Path(__file__).resolve().parents[1]

# Deterministic data with 5-10% NULLs per nullable column, accents, commas and quotes in text.
_CREATE = """
CREATE TABLE {table} (
  id INT PRIMARY KEY,
  title VARCHAR(200),
  release_year INT,
  rating DECIMAL(3,1),
  budget BIGINT,
  released DATE,
  created_at DATETIME,
  description TEXT,
  is_active TINYINT(1)
) ENGINE=InnoDB
"""
_FILL = """
INSERT INTO {table}
SELECT seq,
  IF(seq % 13 = 0, NULL, CONCAT('Film ', seq, ELT(1 + seq % 4, ', the "sequel"', ' — Amélie à Paris',
     ' Ñandú', ''))),
  IF(seq % 17 = 0, NULL, 1950 + seq % 75),
  IF(seq % 11 = 0, NULL, (seq % 100) / 10),
  IF(seq % 19 = 0, NULL, seq * 1000 + (seq % 7) * 1000000000),
  IF(seq % 14 = 0, NULL, DATE('1950-01-01') + INTERVAL (seq % 27000) DAY),
  IF(seq % 16 = 0, NULL, TIMESTAMP('2000-01-01 00:00:00') + INTERVAL (seq * 37) SECOND),
  IF(seq % 12 = 0, NULL, CONCAT('Description ', seq, ': a story, with "quotes", accents éèà and ',
     'a comma; ', REPEAT('x', 20 + seq % 30))),
  IF(seq % 10 = 0, NULL, seq % 2)
FROM seq_1_to_{rows}
"""

# The product's side, run as its own interpreter so imports and start-up are in the figure.
_PRODUCT = """
import time
START = time.perf_counter()
import functools, sys
from pathlib import Path
from osiris_dagster.targets.csv_prepared import CsvPlan, CsvPreparation, adopt_prepared
from osiris_dagster.targets.csv_writer import CsvOptions, write_csv
from osiris_dagster.sources.sql_extract import extract_to_staging
from osiris_dagster.staging import iter_staged_batches

marks = {"imports": time.perf_counter() - START}
def progress(rows):
    marks.setdefault("first batch staged", time.perf_counter() - START)
table, out, overlapped = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "overlapped"
# A string, as a script using the library passes it: the MySQL path then never imports SQLAlchemy
# (sources/source_url.py). A Dagster run has it loaded anyway, for Dagster's own storage.
url = "mysql+pymysql://root@127.0.0.1:3306/osiris_bench"
plan = CsvPlan(out, CsvOptions(), "bench")
consumers = [functools.partial(CsvPreparation, plan)] if overlapped else []
staged = extract_to_staging(
    url, f"SELECT * FROM {table}", out.with_suffix(".arrow"), consumers=consumers, progress=progress
)
marks["extracted"] = time.perf_counter() - START
written = adopt_prepared(plan, staged) if overlapped else None
if written is None:
    written = write_csv(iter_staged_batches(staged.path), staged.schema, out, CsvOptions())
assert written.rows == staged.rows
marks["CSV in place"] = time.perf_counter() - START
print(staged.rows, written.rows, written.bytes)
print("timeline", *(f"{name}={at:.4f}" for name, at in marks.items()), sep="\t", file=sys.stderr)
"""
_METHODS = {
    "mysql": "mysql --batch --quick > tsv",
    "product": "extract + write, one run",
    "apart": "extract, then write (apart)",
}


def _mysql(*sql: str, database: str | None = None) -> str:
    command = [MYSQL, "-h", HOST, "-P", str(PORT), "-u", USER, "--batch", "--skip-column-names"]
    if database:
        command += ["-D", database]
    command += ["-e", ";\n".join(sql)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def ensure_table(rows: int) -> str:
    table = f"movies_{rows}"
    _mysql(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4")
    present = _mysql(
        f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='{DATABASE}' AND table_name='{table}'"
    )
    if present.strip() == "1" and _mysql(f"SELECT COUNT(*) FROM {table}", database=DATABASE).strip() == str(rows):
        return table
    started = time.perf_counter()
    _mysql(f"DROP TABLE IF EXISTS {table}", _CREATE.format(table=table), database=DATABASE)
    _mysql(_FILL.format(table=table, rows=rows), database=DATABASE)
    print(f"created {DATABASE}.{table} ({rows:,} rows) in {time.perf_counter() - started:.1f} s", flush=True)
    return table


def _delete(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def server_cpu() -> float:
    """CPU seconds (user + system) the MariaDB server process has used so far; 0 if not found.

    Both the client and the server run on the same 2 cores, so a method's wall time is bounded by
    (server CPU + client CPU) / 2: the figure says which side a saving would have to come from.
    Other work on the machine that queries the server is counted too.
    """
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                name, rest = stat.read().split(") ", 1)
        except OSError:
            continue
        if name.endswith("(mariadbd") or name.endswith("(mysqld"):
            fields = rest.split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


Measured = tuple[float, float, float, float]  # wall s, peak RSS MB, client CPU s, server CPU s
# Product runs only: seconds from the child script's first line to each phase's end.
_timelines: dict[tuple[int, str], list[dict[str, float]]] = {}


def run_measured(
    command: list[str], stdout_path: Path | None, timeline: list[dict[str, float]] | None = None
) -> Measured:
    """Wall seconds, peak RSS (MB), CPU seconds of one fresh child process and of the server."""
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        server_before = server_cpu()
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        server = server_cpu() - server_before
    finally:
        if stdout_path:
            stdout.close()
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[0]} failed: {stderr[-2000:]}")
    for line in stderr.splitlines():
        if timeline is not None and line.startswith("timeline\t"):
            timeline.append({k: float(v) for k, v in (cell.split("=") for cell in line.split("\t")[1:])})
    # Linux: ru_maxrss in kilobytes
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, server


def bench(rows: int, runs: int, workdir: Path) -> dict[str, Measured]:
    table = ensure_table(rows)
    mysql_cmd = [
        MYSQL, "-h", HOST, "-P", str(PORT), "-u", USER, "--batch", "--quick", "-D", DATABASE,
        "-e", f"SELECT * FROM {table}",
    ]  # fmt: skip
    csv, staged, tsv = (workdir / f"{table}{suffix}" for suffix in (".csv", ".arrow", ".tsv"))
    product_cmd = [sys.executable, "-c", _PRODUCT, table, str(csv)]
    results: dict[str, list[Measured]] = {name: [] for name in _METHODS}
    for _ in range(runs):
        # Interleaved, so all see the same cache and machine state. Every run starts without the
        # files of the runs before it, deleted before its timer starts, as the `mysql` run's was
        # already (its `> file` truncates before the timer): replacing them timed the kernel
        # freeing their page cache (~0.1 s per 200 MB on this VM) for the product only. A product
        # run stages under a new name anyway (its run id, ``staging.staged_path``).
        _delete(tsv)
        results["mysql"].append(run_measured(mysql_cmd, tsv))
        for name, mode in (("product", "overlapped"), ("apart", "apart")):
            _delete(csv, staged)
            results[name].append(run_measured([*product_cmd, mode], None, _timelines.setdefault((rows, name), [])))
    return {
        name: (
            statistics.median(m[0] for m in values),
            max(m[1] for m in values),
            statistics.median(m[2] for m in values),
            statistics.median(m[3] for m in values),
        )
        for name, values in results.items()
    }


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="table size (repeatable); default 1M and 5M")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = args.rows or [1_000_000, 5_000_000]
    load_before = _load()
    report = []
    with tempfile.TemporaryDirectory(prefix="osiris-bench-") as tmp:
        workdir = Path(tmp)
        for rows in sizes:
            figures = bench(rows, args.runs, workdir)
            csv_size = (workdir / f"movies_{rows}.csv").stat().st_size / 1e6
            report.append((rows, figures, csv_size))
            for path in workdir.iterdir():
                path.unlink()
    print()
    print(f"median of {args.runs} runs, fresh subprocess each, wall incl. interpreter start + imports")
    print(f"load average before / after: {load_before} / {_load()}")
    header = (
        f"| {'rows':>10} | {'method':<32} | {'wall s':>7} | {'rows/s':>9} | {'x mysql':>7} | {'peak RSS MB':>11} "
        f"| {'client CPU s':>12} | {'server CPU s':>12} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for rows, figures, csv_size in report:
        base = figures["mysql"][0]
        for name, label in _METHODS.items():
            wall, rss, client, server = figures[name]
            cells = f"{rows:>10,} | {label:<32} | {wall:>7.2f} | {rows / wall:>9,.0f} | {wall / base:>7.2f}"
            print(f"| {cells} | {rss:>11.0f} | {client:>12.2f} | {server:>12.2f} |")
        print(f"|            | (CSV {csv_size:.0f} MB)")
    print()
    print("timeline of the product's runs (median s from the child script's first line; + interpreter start and exit)")
    for (rows, name), marks in _timelines.items():
        phases = {key: statistics.median(m[key] for m in marks) for key in marks[0]} if marks else {}
        print(f"  {rows:>10,} {_METHODS[name]:<28}", "  ".join(f"{key} {at:.3f}" for key, at in phases.items()))


if __name__ == "__main__":
    main()
