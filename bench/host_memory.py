"""Benchmark: host memory per active remote run (issue #13 item 4: <= 50 MB per run).

    .venv/bin/python bench/host_memory.py [--runs 1 8 20] [--modes service process]

Starts N concurrent remote runs of the demo (`movies_to_csv`) on the local sandbox server (SQLite
instance), launched as the daemon launches them (`instance.launch_run`), and samples every
0.25 s the memory of the host-side supervision processes: the supervision service and anything
it spawns. NOT the sandboxes' processes (the local server's worker processes stand for the remote
sandbox). Prints per N the peak total RSS (and PSS, which counts shared pages once), and that
peak divided by N ("RSS/run": the whole service charged to the runs), and for the service the
MARGINAL RSS per run: (peak at N - the idle service just before those N runs) / N, i.e. what
each run adds to a service that is up anyway. The two are different figures; neither stands for
the other.

Two designs, measured in the same invocation on the same code:
* ``service``: this product — one supervision service per DAGSTER_HOME, a thread per run;
* ``process``: the previous design as a baseline — one ``python -m osiris_dagster.remote.supervisor``
  process per run (the launcher's hand-over replaced by starting that process).

Each design gets its own DAGSTER_HOME and one warm-up run first; then N = 1, 8, 20 in turn (the
service lives on between them, as it does under a steady load: this process has loaded the
launcher, so the service is resident, as under a daemon). The load average is printed with
every figure: figures taken on a loaded machine are not final.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from dagster import DagsterInstance, DagsterRunStatus

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from osiris_dagster.remote.launcher import E2BRunLauncher  # noqa: E402
from osiris_dagster.remote.run_files import RunFiles  # noqa: E402
from osiris_dagster.sandbox_server import LocalSandboxServer  # noqa: E402

DAGSTER = str(Path(sys.executable).with_name("dagster"))
MARKER = b"osiris_dagster.remote.supervis"  # supervision_service and supervisor alike
SAMPLE_S = 0.25
MB = 1024 * 1024


def _project(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
    return root


def _supervision_pids(home: Path) -> list[int]:
    """The host-side supervision processes of ``home`` and all their descendants."""
    parents: dict[int, int] = {}
    roots = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] == "Z":
            continue
        parents[int(entry.name)] = int(fields[1])
        if MARKER in argv and str(home).encode() in argv:
            roots.append(int(entry.name))
    found = set(roots)
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; (0, 0) if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0]) * 1024
    return values.get("Rss", 0), values.get("Pss", 0)


class Sampler:
    """Samples the total RSS/PSS of the supervision processes while runs are active."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.peak_rss = self.peak_pss = self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            pids = _supervision_pids(self.home)
            sizes = [_memory(pid) for pid in pids]
            self.peak_rss = max(self.peak_rss, sum(rss for rss, _ in sizes))
            self.peak_pss = max(self.peak_pss, sum(pss for _, pss in sizes))
            self.peak_processes = max(self.peak_processes, len(pids))
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def per_process_launcher() -> Iterator[None]:
    """The previous design: the launcher starts one supervisor process per run."""
    original = E2BRunLauncher._hand_over

    def start_process(self: E2BRunLauncher, files: RunFiles, needs: object, *, resume: bool) -> int:
        with open(files.log, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "osiris_dagster.remote.supervisor", str(files.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        threading.Thread(target=process.wait, daemon=True).start()
        return process.pid

    E2BRunLauncher._hand_over = start_process  # type: ignore[method-assign]
    try:
        yield
    finally:
        E2BRunLauncher._hand_over = original  # type: ignore[method-assign]


def _launch_all(instance: DagsterInstance, template_run: object, count: int) -> list[str]:
    run_ids = []
    for _ in range(count):
        run = instance.add_run(
            template_run.with_status(DagsterRunStatus.QUEUED)._replace(run_id=str(uuid.uuid4()))  # type: ignore[attr-defined]
        )
        run_ids.append(run.run_id)
    for run_id in run_ids:  # as the daemon does: one after another, each returning at once
        instance.launch_run(run_id, workspace=None)  # type: ignore[arg-type]
    return run_ids


def _wait_done(instance: DagsterInstance, home: Path, run_ids: list[str], timeout: float = 900) -> None:
    """Every run finished AND no longer supervised (results copied, records written)."""
    from osiris_dagster.remote.launcher import is_supervised

    deadline = time.monotonic() + timeout
    for run_id in run_ids:
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            if run.is_finished and not is_supervised(home, run_id):
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"run {run_id} did not finish in {timeout:.0f} s")
        if run.status != DagsterRunStatus.SUCCESS:
            raise SystemExit(f"run {run_id} ended {run.status}; see {RunFiles.for_run(home, run_id).log}")


def _wait_exited(home: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _supervision_pids(home) and time.monotonic() < deadline:
        time.sleep(0.1)


def measure(
    mode: str, work: Path, server: LocalSandboxServer, counts: list[int]
) -> list[tuple[int, Sampler, float, Sampler | None]]:
    project, home = _project(work / f"{mode}_project"), work / f"{mode}_home"
    home.mkdir()
    launcher = {
        "backend": "local",
        "server_url": server.url,
        "python": sys.executable,
        "supervision_idle_s": 600,
        # The per-process baseline has no service: the launcher must not start one.
        "supervision_prewarm": mode == "service",
    }
    config = {
        "run_launcher": {"module": "osiris_dagster.remote.launcher", "class": "E2BRunLauncher", "config": launcher},
        "telemetry": {"enabled": False},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    # Queue one run from the real code location; launch copies of it the way the daemon does.
    subprocess.run(
        [DAGSTER, "job", "launch", "-w", "workspace.yaml", "-j", "movies_to_csv"],
        cwd=project, env=env, check=True, capture_output=True,
    )  # fmt: skip
    os.environ["DAGSTER_HOME"] = str(home)
    os.chdir(project)
    results = []
    with DagsterInstance.from_config(str(home)) as instance:
        template_run = instance.get_runs(limit=1)[0]
        with per_process_launcher() if mode == "process" else _nothing():
            _wait_done(instance, home, _launch_all(instance, template_run, 1))  # warm-up
            for count in counts:
                idle_before = None
                if mode == "process":  # the previous runs' processes are gone, not counted again
                    _wait_exited(home)
                else:
                    with Sampler(home) as idle_before:  # the service alone, just before these runs
                        time.sleep(1)
                with Sampler(home) as sampler:
                    _wait_done(instance, home, _launch_all(instance, template_run, count))
                results.append((count, sampler, os.getloadavg()[0], idle_before))
            if mode == "service":
                idle = Sampler(home)
                with idle:
                    time.sleep(1)
                results.append((0, idle, os.getloadavg()[0], None))
    return results


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 8, 20])
    parser.add_argument("--modes", nargs="+", default=["service", "process"], choices=["service", "process"])
    args = parser.parse_args()
    cwd = os.getcwd()
    table = {}
    with tempfile.TemporaryDirectory(dir=REPO / ".osiris" if (REPO / ".osiris").is_dir() else None) as temp:
        base = Path(temp)
        (base / "sandboxes").mkdir()
        with LocalSandboxServer(
            port=0, base_dir=base / "sandboxes", extra_path=[str(Path(sys.executable).parent)]
        ) as server:
            try:
                for mode in args.modes:
                    table[mode] = measure(mode, base, server, args.runs)
                    os.chdir(cwd)
            finally:
                for pid in _supervision_pids(base):  # the bench leaves no process behind
                    os.kill(pid, signal.SIGTERM)
    print(f"{'design':>8} {'runs':>5} {'procs':>6} {'peak RSS MB':>12} {'RSS/run MB':>11} "
          f"{'peak PSS MB':>12} {'PSS/run MB':>11} {'idle before MB':>15} {'marginal RSS/run MB':>20} "
          f"{'load':>5}")  # fmt: skip
    for mode, rows in table.items():
        for count, sampler, load, idle_before in rows:
            per_rss = sampler.peak_rss / MB / count if count else float("nan")
            per_pss = sampler.peak_pss / MB / count if count else float("nan")
            idle_mb = idle_before.peak_rss / MB if idle_before is not None else float("nan")
            marginal = (sampler.peak_rss / MB - idle_mb) / count if count else float("nan")
            label = str(count) if count else "idle"
            print(f"{mode:>8} {label:>5} {sampler.peak_processes:>6} {sampler.peak_rss / MB:>12.1f} {per_rss:>11.1f} "
                  f"{sampler.peak_pss / MB:>12.1f} {per_pss:>11.1f} {idle_mb:>15.1f} {marginal:>20.1f} "
                  f"{load:>5.1f}")  # fmt: skip
    if "service" in table and "process" in table:
        for (count, service, _, _), (_, process, _, _) in zip(table["service"], table["process"], strict=False):
            if count:
                print(f"runs={count}: service/process peak RSS ratio {service.peak_rss / process.peak_rss:.2f}")
    print(f"load average now: {' '.join(f'{value:.1f}' for value in os.getloadavg())} (2 cores shared)")


if __name__ == "__main__":
    main()
