"""Where the time of one extract + CSV write goes, phase by phase (in one process, warm imports).

Not a test: run by hand, after ``bench/extract_csv.py`` has created the table.

    .venv/bin/python bench/extract_breakdown.py --rows 1000000

Phases (each timed on its own, median of ``--runs``):

* ``fetch (connectorx, SELECT *)``   connectorx arrow_stream of the plain query: typed Arrow, as
  before issue 10 (the product then cast every batch to the exact source types);
* ``fetch (connectorx, server text)`` the query the product runs now: every column formatted by
  the server (``formats.mysql_text``), connectorx only moves UTF-8 strings;
* ``extract_to_staging``             the product's read step: fetch + staging write;
* ``staging read``                   iterating the staged IPC file;
* ``formatting``                     ``format_rows`` of every staged batch on one thread (quoting);
* ``write_csv``                      the product's write step: staging read + formatting on the
  thread pool + file write.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

URL = "mysql+pymysql://root@127.0.0.1:3306/osiris_bench"
CX_URL = "mysql://root@127.0.0.1:3306/osiris_bench"


def timed(function) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import connectorx
    from sqlalchemy.engine import make_url

    from osiris_dagster.formats.csv_values import CsvOptions, format_rows
    from osiris_dagster.formats.mysql_text import mysql_text_column, quote_identifier
    from osiris_dagster.sources.mysql_reader import _result_fields
    from osiris_dagster.sources.sql_extract import extract_to_staging
    from osiris_dagster.staging import iter_staged_batches
    from osiris_dagster.targets.csv_writer import write_csv

    table = f"movies_{args.rows}"
    query = f"SELECT * FROM {table}"
    columns = [mysql_text_column(f) for f in _result_fields(make_url(URL), query)]
    text_query = (
        "SELECT "
        + ", ".join(f"{c.server_text} AS {quote_identifier(c.name)}" for c in columns)
        + f" FROM ({query}) AS osiris_q"
    )

    def fetch(sql: str) -> None:
        for _ in connectorx.read_sql(CX_URL, sql, return_type="arrow_stream", batch_size=20_000):
            pass

    with tempfile.TemporaryDirectory(prefix="osiris-breakdown-") as tmp:
        staged_path = Path(tmp) / "t.arrow"
        csv_path = Path(tmp) / "t.csv"
        staged = extract_to_staging(URL, query, staged_path)
        options = CsvOptions()

        def formatting() -> None:
            for batch in iter_staged_batches(staged.path):
                format_rows(batch, options)

        phases = {
            "fetch (connectorx, SELECT *)": lambda: fetch(query),
            "fetch (connectorx, server text)": lambda: fetch(text_query),
            "extract_to_staging": lambda: extract_to_staging(URL, query, staged_path),
            "staging read": lambda: sum(b.num_rows for b in iter_staged_batches(staged.path)),
            "formatting (1 thread)": formatting,
            "write_csv": lambda: write_csv(iter_staged_batches(staged.path), staged.schema, csv_path, options),
        }
        print(f"| phase ({args.rows:,} rows, median of {args.runs}) | s |")
        print("|---|---:|")
        for name, function in phases.items():
            seconds = statistics.median(timed(function) for _ in range(args.runs))
            print(f"| {name} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
