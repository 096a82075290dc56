"""Where the time of one extract + CSV write goes, phase by phase (in one process, warm imports).

Not a test: run by hand, after ``bench/extract_csv.py`` has created the table.

    .venv/bin/python bench/extract_breakdown.py --rows 1000000

Phases (each timed on its own, median of ``--runs``):

* ``fetch (C row reader)``          the product's MySQL read: the text protocol's rows split into
  Arrow string arrays (``sources._mysql_rows``), nothing staged;
* ``fetch (pymysql, generic path)``  the same rows read by pymysql, one Python object per cell
  (``OSIRIS_MYSQL_PATH=generic``);
* ``extract_to_staging``             the product's read step: fetch + staging write;
* ``staging read``                   iterating the staged IPC file;
* ``formatting (C)``                 ``csv_lines`` of every staged batch on one thread: the
  product's quoting and joining (``formats._csv_rows``);
* ``formatting (pyarrow kernels)``    ``format_rows``, the same rules in pyarrow.compute kernels
  (the reference and fallback), for comparison;
* ``write_csv``                      the product's write step: staging read + formatting on the
  thread pool + file write.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

URL = "mysql+pymysql://root@127.0.0.1:3306/osiris_bench"


def timed(function) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall s, CPU s of this process) of one call."""
    started, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import logging
    import os

    from osiris_dagster.formats.csv_values import CsvOptions, csv_lines, format_rows
    from osiris_dagster.sources.mysql_reader import FORCE_PATH_ENV, mysql_batches
    from osiris_dagster.sources.source_url import source_url
    from osiris_dagster.sources.sql_extract import extract_to_staging
    from osiris_dagster.staging import iter_staged_batches
    from osiris_dagster.targets.csv_writer import write_csv

    table = f"movies_{args.rows}"
    query = f"SELECT * FROM {table}"

    def fetch(path: str) -> None:
        os.environ[FORCE_PATH_ENV] = path
        try:
            _, batches = mysql_batches(source_url(URL), query, 100_000, logging.getLogger("bench"))
            for _ in batches:
                pass
        finally:
            del os.environ[FORCE_PATH_ENV]

    with tempfile.TemporaryDirectory(prefix="osiris-breakdown-") as tmp:
        staged_path = Path(tmp) / "t.arrow"
        csv_path = Path(tmp) / "t.csv"
        staged = extract_to_staging(URL, query, staged_path)
        options = CsvOptions()

        def formatting(format_batch) -> None:  # type: ignore[no-untyped-def]
            for batch in iter_staged_batches(staged.path):
                format_batch(batch, options)

        phases = {
            "fetch (C row reader)": lambda: fetch("fast"),
            "fetch (pymysql, generic path)": lambda: fetch("generic"),
            "extract_to_staging": lambda: extract_to_staging(URL, query, staged_path),
            "staging read": lambda: sum(b.num_rows for b in iter_staged_batches(staged.path)),
            "formatting (C, 1 thread)": lambda: formatting(csv_lines),
            "formatting (pyarrow kernels, 1 thread)": lambda: formatting(format_rows),
            "write_csv": lambda: write_csv(iter_staged_batches(staged.path), staged.schema, csv_path, options),
        }
        print(f"| phase ({args.rows:,} rows, median of {args.runs}) | wall s | CPU s |")
        print("|---|---:|---:|")
        for name, function in phases.items():
            times = sorted(timed(function) for _ in range(args.runs))
            wall, cpu = times[len(times) // 2]
            print(f"| {name} | {wall:.2f} | {cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()
