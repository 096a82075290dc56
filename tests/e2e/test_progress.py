"""A long extract and write report progress in the run log, and each materialization records rows/s."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e

# Sized to take a little over 5 s to extract on an idle 2-core machine: the SQLite generic path
# spends ~3.5 µs of CPU per row here (4.2 s of CPU for 1.2M rows, measured under load).
ROWS = 1_600_000
PIPELINE = f"""\
oml_version: "0.1.0"
name: big-count
steps:
- id: extract-big
  component: sql.extractor
  mode: read
  config:
    connection: "@sqlite.movies"
    query: >-
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {ROWS})
      SELECT x AS id, 'row ' || x AS label FROM c
- id: write-big
  component: filesystem.csv_writer
  mode: write
  needs: ["extract-big"]
  config: {{path: output/big.csv}}
"""
PROGRESS = re.compile(r"extract-big: extract: ([\d,]+) rows so far, ([\d,]+) rows/s, ([\d.]+) s elapsed")


def test_a_long_extract_logs_progress_to_the_console_and_the_run_log(project: Path, clean_env: dict[str, str]) -> None:
    (project / "assets" / "big_count.yaml").write_text(PIPELINE)
    result = run_cli(["run", "big_count", "-v"], cwd=project, env=clean_env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    with DagsterInstance.from_config(clean_env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        messages = [entry.user_message or "" for entry in instance.all_logs(run.run_id)]
        materializations = [
            entry.dagster_event.event_specific_data.materialization  # type: ignore[union-attr]
            for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        ]
    in_run_log = [m for line in messages if (m := PROGRESS.search(line))]
    assert in_run_log, f"no progress line in the run log; is {ROWS:,} rows still > 5 s of extraction here?"
    assert PROGRESS.search(result.stderr), "the -v console shows the same lines"
    for match in in_run_log:
        rows, rate, elapsed = (float(g.replace(",", "")) for g in match.groups())
        assert 0 < rows <= ROWS and rate > 0 and elapsed >= 5.0
    # Lines come at most every 5 s: consecutive elapsed figures are >= 5 s apart.
    elapsed = [float(m.group(3)) for m in in_run_log]
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(elapsed))
    rates = {str(m.asset_key.to_user_string()): m.metadata["rows_per_second"].value for m in materializations}
    assert set(rates) == {"big_count/extract_big", "big_count/write_big"}
    assert all(rate > 0 for rate in rates.values())
    assert (project / "output" / "big.csv").read_text().count("\n") == ROWS + 1
