"""The daemon's look for abandoned runs: a sensor that reclaims runs whose process died.

A local run killed with ``kill -9`` stays STARTED in Dagster until someone looks. The next run
start and ``osiris-dagster logs list`` look (``runs.abandoned``); this sensor makes the daemon
(``dagster dev``, ``dagster-daemon run``) look too, every ``ABANDONED_RUNS_INTERVAL_S`` seconds,
so a dead run is marked FAILURE even when nothing else runs. It never requests a run; what it
found is its skip message. Running by default: it only touches runs proved dead on this host.

Deliberately a sensor rather than Dagster's run monitoring: run monitoring asks the run launcher
for the worker's health, and the default launcher cannot tell (``supports_check_run_worker_health``
is false), while our owner records can (pid + process start time on this host).
"""

from __future__ import annotations

import dagster as dg

from osiris_dagster.project import ProjectLayout
from osiris_dagster.runs.abandoned import reclaim_abandoned_runs

ABANDONED_RUNS_SENSOR = "osiris_abandoned_runs"
ABANDONED_RUNS_INTERVAL_S = 30


@dg.sensor(
    name=ABANDONED_RUNS_SENSOR,
    minimum_interval_seconds=ABANDONED_RUNS_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks local runs whose process died (kill -9, OOM) as failed and removes their temp files",
)
def abandoned_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    reclaimed = reclaim_abandoned_runs(ProjectLayout.discover(), context.instance)
    if reclaimed:
        context.log.warning(f"marked {len(reclaimed)} abandoned run(s) as failed: {', '.join(reclaimed)}")
        return dg.SkipReason(f"marked abandoned runs as failed: {', '.join(reclaimed)}")
    return dg.SkipReason("no abandoned runs")
