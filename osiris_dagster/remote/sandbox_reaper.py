"""The reaper: kills every sandbox whose run is finished or unknown to this Dagster instance.

A sandbox is killed by its run's supervisor in every outcome it lives to see. It does not see
all of them: a supervisor killed with SIGKILL, a host that restarts, a kill that failed because
the service was unreachable, a run deleted while it ran. Each leaves a billed sandbox (and, with
the local server, a worker still executing the job) until ``sandbox_timeout_s`` after the last
renewal (`sandbox_lease`). The reaper closes that gap from the one process that always runs in
a deployment: the daemon, as the sensor ``e2b_sandbox_reaper`` of the code location (every
`REAP_INTERVAL_S`, the run-monitoring poll interval of the example instance).

What it looks at is the sandbox service's own list, not the runs: every sandbox this instance
created carries the metadata ``osiris/run_storage=<the run storage's id>`` and
``dagster_run_id=<run>`` (`sandbox_metadata`), so ``Sandbox.list(query=SandboxQuery(metadata=...))``
finds them - also those of runs the instance no longer knows. Another Dagster instance sharing
the E2B team has another run storage id: its sandboxes are never touched. A sandbox of the warm
pool carries the pool's metadata; it is reaped once the run that claimed it (the run whose
``e2b/sandbox_id`` tag names it) is finished; unclaimed ones expire by the pool's TTL.

A sandbox is kept while its run is not finished (QUEUED/STARTING/STARTED/CANCELING): a lost
supervisor is run monitoring's business (resume or fail the run); once the run is finished, the
next pass kills the sandbox. Kills are reported only when the service confirmed them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from osiris_dagster.remote.sandbox_lease import KillOutcome, kill_sandbox
from osiris_dagster.remote.settings import SandboxSettings
from osiris_dagster.remote.tags import SANDBOX_ID_TAG, SANDBOX_METADATA_RUN_ID, SANDBOX_METADATA_RUN_STORAGE
from osiris_dagster.secrets import mask_text

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 30
REAPER_SENSOR_NAME = "e2b_sandbox_reaper"
_PAGE = 100


def sandbox_metadata(run_id: str, run_storage_id: str) -> dict[str, str]:
    """The metadata a run's sandbox is created with (what the reaper lists by)."""
    return {SANDBOX_METADATA_RUN_ID: run_id, SANDBOX_METADATA_RUN_STORAGE: run_storage_id}


@dataclass
class ReapReport:
    """One pass: sandboxes killed (confirmed), kept (run alive) and kills that failed."""

    killed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        killed, kept, failed = len(self.killed), len(self.kept), len(self.failed)
        return f"sandboxes killed: {killed}, kept (run alive): {kept}, kill failed: {failed}"


def _listed(settings: SandboxSettings, metadata: dict[str, str]) -> Iterator[Any]:
    from e2b import Sandbox, SandboxQuery, SandboxState

    paginator = Sandbox.list(
        query=SandboxQuery(metadata=metadata, state=[SandboxState.RUNNING, SandboxState.PAUSED]),
        limit=_PAGE,
        **settings.sdk_kwargs(),
    )
    while paginator.has_next:
        yield from paginator.next_items()


def _run_of_pooled_sandbox(instance: dg.DagsterInstance, sandbox_id: str) -> Any:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={SANDBOX_ID_TAG: sandbox_id}), limit=1)
    return runs[0] if runs else None


def reap_sandboxes(instance: dg.DagsterInstance, settings: SandboxSettings) -> ReapReport:
    """Kill the sandboxes of this instance whose run is finished or unknown (one pass)."""
    from osiris_dagster.remote.sandbox_pool import POOL_METADATA

    report = ReapReport()
    storage_id = instance.run_storage.get_run_storage_id()
    doomed: list[tuple[str, Any, str]] = []  # (sandbox id, run or None, why)
    for info in _listed(settings, {SANDBOX_METADATA_RUN_STORAGE: storage_id}):
        run_id = info.metadata.get(SANDBOX_METADATA_RUN_ID, "")
        run = instance.get_run_by_id(run_id) if run_id else None
        if run is None:
            doomed.append((info.sandbox_id, None, f"its run {run_id or '(none)'} is unknown to this instance"))
        elif run.is_finished:
            doomed.append((info.sandbox_id, run, f"its run is {run.status.value}"))
        else:
            report.kept.append(info.sandbox_id)
    if settings.pool_size > 0:
        for info in _listed(settings, {POOL_METADATA: settings.pool_name}):
            run = _run_of_pooled_sandbox(instance, info.sandbox_id)
            if run is None:
                continue  # idle, filling, or claimed by another instance: the pool's TTL ends it
            if run.is_finished:
                doomed.append((info.sandbox_id, run, f"its run is {run.status.value}"))
            else:
                report.kept.append(info.sandbox_id)
    for sandbox_id, run, why in doomed:
        outcome = kill_sandbox(sandbox_id, settings.sdk_kwargs())
        (report.killed if outcome.confirmed else report.failed).append(sandbox_id)
        _report(instance, run, outcome, why)
    return report


def _report(instance: dg.DagsterInstance, run: Any, outcome: KillOutcome, why: str) -> None:
    message = f"Reaper: {outcome.message} ({why})"
    log.warning(mask_text(message))
    if run is None:
        return
    from osiris_dagster.remote.launcher import E2BRunLauncher

    instance.report_engine_event(message, run, cls=E2BRunLauncher)


@dg.sensor(
    name=REAPER_SENSOR_NAME,
    minimum_interval_seconds=REAP_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Kills E2B sandboxes whose run is finished or unknown to this instance (E2BRunLauncher only).",
)
def e2b_sandbox_reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    from osiris_dagster.remote.launcher import E2BRunLauncher

    launcher = context.instance.run_launcher
    if not isinstance(launcher, E2BRunLauncher):
        return dg.SkipReason("the instance's run launcher is not E2BRunLauncher: nothing to reap")
    try:
        report = reap_sandboxes(context.instance, launcher.settings)
    except Exception as error:  # service unreachable: try again next interval
        return dg.SkipReason(mask_text(f"could not list sandboxes: {type(error).__name__}: {error}"))
    return dg.SkipReason(report.summary())
