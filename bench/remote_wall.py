"""Remote/local wall time of the same job: the demo and a 100+ step pipeline, cold, fresh service, warm pool.

    .venv/bin/python bench/remote_wall.py [--repeat 3] [--steps 120]

Issue #13 goals: demo <= 1.3x cold and <= 1.0x with the warm pool; the 100+ step job <= 1.2x.

* local  = ``dagster job execute`` of the job in the project (wall of the process: interpreter,
  imports, run);
* remote = ``instance.launch_run`` (as the daemon calls it) on the E2B launcher with the local
  sandbox server, until the run is finished. The host stores the run's terminal event only after
  the results are copied back and the session is complete, so "finished" is "done" for a user;
  The supervision service is up: this process loaded the launcher, so the service is resident, as
  it is for the daemon (`supervision_client.LauncherPresence`);
* fresh  = the same with NO service running at the launch (``supervision_prewarm: false``, the
  previous run's service gone): what a ``dagster job launch`` from a shell sees after
  ``supervision_idle_s`` with no daemon, webserver or code server up; the launch starts the service;
* pool   = the same as cold with ``pool: {size: 1}``, filled and idle before each launch.

Every configuration runs once as a warm-up (the host's cached empty sandbox instance, page cache),
then ``--repeat`` times, the configurations interleaved so that a change of machine load hits all
of them alike. Prints medians, the ratios against the local median of the same invocation, a
breakdown of the remote runs (read from the supervisor's log: supervisor start, sandbox
create/claim, worker start, the worker's own phases, run start, end, copy-back) and the load
average.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from scale import make_project  # noqa: E402

from osiris_dagster.sandbox_server import LocalSandboxServer  # noqa: E402

DAGSTER = str(Path(sys.executable).with_name("dagster"))
# On the repository's filesystem (git-ignored state dir), as bench/launcher.py: /tmp is slower here.
WORK_BASE = REPO / ".osiris" / "bench"
_RUN_TIMEOUT_S = 600

# Phases read from `<DAGSTER_HOME>/e2b/<run id>/supervisor.log` (ms after launch_run, or durations).
_PHASES = {
    "supervisor up": r"supervisor up (\d+) ms after launch_run",
    "worker started": r"worker started in sandbox .* (\d+) ms after launch_run",
    "worker preflight (incl. import dagster)": r"start-up: preflight (\d+) ms",
    "worker seed": r"start-up: .*seed (\d+) ms",
    "worker code location": r"start-up: .*code location (\d+) ms",
    "sandbox run starts": r"the sandbox's run starts (\d+) ms after launch_run",
    "worker execute": r"run: execute (\d+) ms",
    "worker pack": r"run: .*pack (\d+) ms",
}

MODES = ("cold", "fresh", "pool")
CREATE_OR_CLAIM = "sandbox create/claim (duration)"
SANDBOX_RUN_SUCCESS = "RUN_SUCCESS in the sandbox"
HOST_FINISHED = "host run finished (results copied back)"


@dataclass
class Job:
    label: str
    name: str
    project: Path
    samples: dict[str, list[float]] = field(default_factory=dict)
    phases: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def demo_project(root: Path) -> Job:
    root.mkdir(parents=True)
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
    return Job("demo", "movies_to_csv", root)


def wide_project(root: Path, steps: int) -> Job:
    make_project(root, steps, absolute_db=True)
    shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
    return Job(f"{steps} steps", "wide", root)


def _home(path: Path, launcher: dict[str, object] | None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {"telemetry": {"enabled": False}}
    if launcher is not None:
        config["run_launcher"] = {
            "module": "osiris_dagster.remote.launcher",
            "class": "E2BRunLauncher",
            "config": launcher,
        }
    (path / "dagster.yaml").write_text(yaml.safe_dump(config))
    return path


def _env(home: Path, project: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(home), "OSIRIS_PROJECT_DIR": str(project)}


def run_local(job: Job, home: Path) -> tuple[float, float]:
    """(wall s, process start -> first STEP_START s) of `dagster job execute`."""
    started = time.time()
    subprocess.run(
        [DAGSTER, "job", "execute", "-m", "osiris_dagster.definitions", "-a", "defs", "-j", job.name],
        cwd=job.project, env=_env(home, job.project), check=True, capture_output=True,
    )  # fmt: skip
    wall = time.time() - started
    with DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        assert run.status == DagsterRunStatus.SUCCESS, run.status
        first_step = min(e.timestamp for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START))
    return wall, first_step - started


class Remote:
    """A DAGSTER_HOME with the E2B launcher (cold, fresh or pool) and one queued run to copy per launch."""

    def __init__(self, job: Job, home: Path, server: LocalSandboxServer, mode: str) -> None:
        launcher: dict[str, object] = {"backend": "local", "server_url": server.url, "python": sys.executable}
        pool = mode == "pool"
        if pool:
            launcher["pool"] = {"size": 1, "idle_ttl_s": 900, "name": f"bench-{uuid.uuid4().hex[:8]}"}
        self.fresh = mode == "fresh"
        if self.fresh:  # the service exits 1 s after each run; no prewarm keeps it up
            launcher.update(supervision_prewarm=False, supervision_idle_s=1.0)
        self.job, self.home, self.pool = job, _home(home, launcher), pool
        subprocess.run(
            [DAGSTER, "job", "launch", "-w", "workspace.yaml", "-j", job.name],
            cwd=job.project, env=_env(self.home, job.project), check=True, capture_output=True,
        )  # fmt: skip
        os.environ["OSIRIS_PROJECT_DIR"] = str(job.project)
        os.chdir(job.project)
        self.instance = DagsterInstance.from_config(str(self.home))
        self.template = self.instance.get_runs(limit=1)[0]

    def run(self) -> tuple[float, float, dict[str, float]]:
        """(wall s, launch -> first STEP_START s, phases) of one launch."""
        os.environ["OSIRIS_PROJECT_DIR"] = str(self.job.project)
        os.chdir(self.job.project)
        _wait_for_quiet(self.home, service_too=self.fresh)
        if self.pool:
            from osiris_dagster.remote.sandbox_pool import SandboxPool

            SandboxPool(self.instance.run_launcher.settings).fill()  # idle and warm before the launch
        run = self.instance.add_run(
            self.template.with_status(DagsterRunStatus.QUEUED)._replace(run_id=str(uuid.uuid4()))
        )
        started = time.time()
        self.instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
        deadline = time.monotonic() + _RUN_TIMEOUT_S
        while not (finished := self.instance.get_run_by_id(run.run_id)).is_finished:
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run.run_id} did not finish in {_RUN_TIMEOUT_S} s (see {self.home}/e2b)")
            time.sleep(0.02)
        wall = time.time() - started
        if finished.status != DagsterRunStatus.SUCCESS:
            raise SystemExit(f"remote run {run.run_id} ended {finished.status} (see {self.home}/e2b)")
        of_type = {DagsterEventType.STEP_START, DagsterEventType.RUN_SUCCESS, DagsterEventType.ENGINE_EVENT}
        events = self.instance.all_logs(run.run_id, of_type=of_type)
        first_step = min(e.timestamp for e in events if e.dagster_event_type == DagsterEventType.STEP_START)
        phases = _phases(self.home / "e2b" / run.run_id / "supervisor.log")
        for event in events:  # the supervisor's "Sandbox X created (N ms)" / "claimed from the warm pool (N ms, ...)"
            match = re.search(r"\bSandbox \S+ (?:created|claimed from the warm pool \S+) \((\d+) ms", event.message)
            if match:
                phases[CREATE_OR_CLAIM] = float(match.group(1))
        # An event's timestamp is when the sandbox created it; the host stores the terminal event last.
        # The run row can read SUCCESS a moment before the RUN_SUCCESS event is visible (two sqlite files).
        success = [e.timestamp for e in events if e.dagster_event_type == DagsterEventType.RUN_SUCCESS]
        if success:
            phases[SANDBOX_RUN_SUCCESS] = 1000 * (max(success) - started)
        phases[HOST_FINISHED] = 1000 * wall
        return wall, first_step - started, phases

    def close(self) -> None:
        _wait_for_quiet(self.home, service_too=False)
        if self.pool:
            from osiris_dagster.remote.sandbox_pool import SandboxPool

            SandboxPool(self.instance.run_launcher.settings).drain()
        self.instance.dispose()


def _phases(log: Path) -> dict[str, float]:
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    found = {}
    for name, pattern in _PHASES.items():
        match = re.search(pattern, text)
        if match:
            found[name] = float(match.group(1))
    return found


def _wait_for_quiet(home: Path, service_too: bool) -> None:
    """No run of this home is supervised and no pool top-up runs; ``service_too``: no service either."""
    spool = home / "e2b" / "spool"
    pattern = f"osiris_dagster.remote.*{home}" if service_too else f"osiris_dagster.remote.sandbox_pool.*{home}"
    deadline = time.time() + 120
    while time.time() < deadline:
        running = subprocess.run(["pgrep", "-f", pattern], capture_output=True).stdout
        if not running.strip() and not (spool.is_dir() and any(spool.iterdir())):
            return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--only", choices=["demo", "wide"], help="measure one job only")
    args = parser.parse_args()
    loads = [os.getloadavg()[0]]
    WORK_BASE.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=WORK_BASE) as tmp,
        LocalSandboxServer(port=0, extra_path=[str(Path(sys.executable).parent)]) as server,
    ):
        work = Path(tmp)
        jobs = []
        if args.only in (None, "demo"):
            jobs.append(demo_project(work / "demo"))
        if args.only in (None, "wide"):
            jobs.append(wide_project(work / "wide", args.steps))
        remotes = {
            (job.label, mode): Remote(job, work / f"{job.project.name}_{mode}_home", server, mode)
            for job in jobs
            for mode in MODES
        }
        local_homes = {job.label: _home(work / f"{job.project.name}_local_home", None) for job in jobs}
        try:
            for round_ in range(args.repeat + 1):  # round 0: warm-up, not counted
                for job in jobs:
                    wall, first = run_local(job, local_homes[job.label])
                    if round_:
                        job.samples.setdefault("local", []).append(wall)
                        job.samples.setdefault("local first step", []).append(first)
                    for mode in MODES:
                        wall, first, phases = remotes[(job.label, mode)].run()
                        if round_:
                            job.samples.setdefault(mode, []).append(wall)
                            job.samples.setdefault(f"{mode} first step", []).append(first)
                            for name, value in phases.items():
                                job.phases.setdefault(mode, {}).setdefault(name, []).append(value)
                    loads.append(os.getloadavg()[0])
                    print(f"round {round_} {job.label}: done (load {loads[-1]:.1f})", file=sys.stderr, flush=True)
        finally:
            for remote in remotes.values():
                remote.close()
    _report(jobs, args.repeat, loads)


def _report(jobs: list[Job], repeat: int, loads: list[float]) -> None:
    goals = {"demo": {"cold": 1.3, "pool": 1.0}}
    med = statistics.median
    print(f"remote/local wall, median of {repeat} (after one warm-up); load average (1 min) during the run: "
          f"{min(loads):.1f}-{max(loads):.1f}")  # fmt: skip
    print(
        f"{'job':<10} {'local s':>8} {'cold s':>8} {'fresh s':>8} {'pool s':>8} {'cold x':>7} {'fresh x':>7} "
        f"{'pool x':>7}   goals (fresh: held to the cold goal)"
    )
    for job in jobs:
        local = med(job.samples["local"])
        cold, fresh, pool = (med(job.samples[mode]) for mode in MODES)
        goal = goals.get(job.label, {"cold": 1.2, "pool": 1.2})
        verdict = ", ".join(
            f"{mode} <= {limit}x {'met' if ratio <= limit else 'MISSED'}"
            for mode, limit, ratio in (
                ("cold", goal["cold"], cold / local),
                ("fresh", goal["cold"], fresh / local),
                ("pool", goal["pool"], pool / local),
            )
        )
        ratios = f"{cold / local:>6.2f}x {fresh / local:>6.2f}x {pool / local:>6.2f}x"
        print(f"{job.label:<10} {local:>8.2f} {cold:>8.2f} {fresh:>8.2f} {pool:>8.2f} {ratios}   {verdict}")
    print("\nstart -> first STEP_START, median s (local: process start; remote: launch_run)")
    for job in jobs:
        print(
            f"{job.label:<10} " + "  ".join(f"{m} {med(job.samples[f'{m} first step']):.2f}" for m in ("local", *MODES))
        )
    print('\nremote breakdown, median ms ("after launch_run" unless a duration; from the supervisor\'s log)')
    for job in jobs:
        for mode, phases in job.phases.items():
            print(f"{job.label} / {mode}:")
            for name in [*_PHASES, CREATE_OR_CLAIM, SANDBOX_RUN_SUCCESS, HOST_FINISHED]:
                if name in phases:
                    print(f"    {name:<40} {med(phases[name]):>8.0f}")
    print("\nper-sample walls (s): " + "; ".join(
        f"{job.label} {mode} " + ",".join(f"{v:.2f}" for v in job.samples[mode])
        for job in jobs for mode in ("local", *MODES)
    ))  # fmt: skip


if __name__ == "__main__":
    main()
