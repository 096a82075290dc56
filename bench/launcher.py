"""Benchmark the E2B run launcher (local backend) against a local run of the demo pipeline.

    .venv/bin/python bench/launcher.py

Prints, in one invocation:
* local: `dagster job execute` wall and its process start -> first STEP_START;
* remote: `instance.launch_run` (as the daemon calls it) -> first STEP_START (host event log),
  and launch -> run end; the overhead is the remote start-up minus the local one (target <= 1.0 s);
* the same with the warm pool (`pool: {size: 1}`, filled and idle before the launch; target <= 0.3 s);
* remote/local wall ratio (target <= 1.5x);
* artifact copy: one archive of 10 / 100 / 1,000 files through the real SDK (target <= 100 ms, flat);
* relay throughput into a sqlite host instance (target >= 5,000 events/s).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from dagster import DagsterEventType, DagsterInstance, serialize_value
from e2b import Sandbox

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from osiris_dagster.remote import relay_protocol  # noqa: E402
from osiris_dagster.remote.event_relay import EventRelay  # noqa: E402
from osiris_dagster.remote.launcher import is_supervised  # noqa: E402
from osiris_dagster.remote.result_archive import unpack_result  # noqa: E402
from osiris_dagster.sandbox_server import LocalSandboxServer  # noqa: E402

DAGSTER = str(Path(sys.executable).with_name("dagster"))
# Project folders live on the repository's filesystem (git-ignored state dir), not in /tmp: on the
# shared bench machine /tmp creates files ~10x slower, which no real project folder would see.
WORK_BASE = REPO / ".osiris" / "bench"


def _project(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in ("assets", "resources"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
    return root


def _first(instance: DagsterInstance, run_id: str, event: DagsterEventType) -> float:
    return min(e.timestamp for e in instance.all_logs(run_id, of_type=event))


def bench_local(work: Path) -> tuple[float, float]:
    project, home = _project(work / "local"), work / "local_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    env = {"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(home)}
    started = time.time()
    subprocess.run(
        [DAGSTER, "job", "execute", "-m", "osiris_dagster.definitions", "-a", "defs", "-j", "movies_to_csv"],
        cwd=project, env=env, check=True, capture_output=True,
    )  # fmt: skip
    wall = time.time() - started
    with DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        return wall, _first(instance, run.run_id, DagsterEventType.STEP_START) - started


def bench_remote(work: Path, server: LocalSandboxServer, pool: bool = False) -> tuple[float, float, float]:
    """One measured launch, after one warm-up run on the same host (steady state: the host has
    its cached empty sandbox instance, created after its first run; with `pool`, the pool is
    filled and idle again before the measured launch)."""
    import os
    import uuid

    from dagster import DagsterRunStatus

    name = "remote_pool" if pool else "remote"
    project, home = _project(work / name), work / f"{name}_home"
    home.mkdir()
    launcher: dict[str, object] = {"backend": "local", "server_url": server.url, "python": sys.executable}
    if pool:
        launcher["pool"] = {"size": 1, "idle_ttl_s": 600, "name": "bench"}
    config = {
        "run_launcher": {"module": "osiris_dagster.remote.launcher", "class": "E2BRunLauncher", "config": launcher},
        "telemetry": {"enabled": False},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(home)}
    # Queue a run from the real code location, then launch it the way the daemon does.
    subprocess.run(
        [DAGSTER, "job", "launch", "-w", "workspace.yaml", "-j", "movies_to_csv"],
        cwd=project, env=env, check=True, capture_output=True,
    )  # fmt: skip
    os.chdir(project)
    with DagsterInstance.from_config(str(home)) as instance:
        queued = instance.get_runs(limit=1)[0]
        warm_up = instance.add_run(queued.with_status(DagsterRunStatus.QUEUED)._replace(run_id=str(uuid.uuid4())))
        _launch_and_wait(instance, project, warm_up.run_id)
        _wait_for_quiet(home)  # the warm-up's supervisor finished (and its pool top-up)
        if pool:
            from osiris_dagster.remote.sandbox_pool import SandboxPool

            SandboxPool(instance.run_launcher.settings).fill()  # idle and warm before the launch
        started = time.time()
        _launch_and_wait(instance, project, queued.run_id)
        # Complete when the run's supervision ended: results unpacked, remote-only records appended.
        while is_supervised(home, queued.run_id):
            time.sleep(0.02)
        wall = time.time() - started
        ended = _first(instance, queued.run_id, DagsterEventType.RUN_SUCCESS)
        first_step = _first(instance, queued.run_id, DagsterEventType.STEP_START)
        _wait_for_quiet(home)
        return first_step - started, ended - started, wall


def _launch_and_wait(instance: DagsterInstance, project: Path, run_id: str) -> None:
    instance.launch_run(run_id, workspace=None)  # type: ignore[arg-type]
    while not (instance.get_run_by_id(run_id).is_finished and (project / "logs" / f"run_{run_id}").exists()):
        time.sleep(0.05)


def _wait_for_quiet(home: Path) -> None:
    """No run of this home is still supervised and no pool top-up is running (the service may idle on)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        busy = any(is_supervised(home, folder.name) for folder in (home / "e2b").iterdir() if folder.is_dir())
        filling = subprocess.run(
            ["pgrep", "-f", f"osiris_dagster.remote.sandbox_pool fill.*{home}"], capture_output=True
        )
        if not busy and not filling.stdout.strip():
            return
        time.sleep(0.2)


def bench_copy(server: LocalSandboxServer, files: int) -> float:
    sandbox = Sandbox.create(**server.sdk_kwargs())
    try:
        script = (
            f"mkdir -p project/output && for i in $(seq 1 {files}); do "
            "printf 'id,name\\n%s,x\\n' $i > project/output/f$i.csv; done && tar cf result.tar project"
        )
        sandbox.commands.run(script, cwd="/home/user", timeout=120)
        with tempfile.TemporaryDirectory(dir=WORK_BASE) as target:
            started = time.perf_counter()
            data = bytes(sandbox.files.read("/home/user/result.tar", format="bytes"))
            unpacked = unpack_result(data, Path(target))
            elapsed = time.perf_counter() - started
        assert unpacked.files == files
        return elapsed
    finally:
        sandbox.kill()


def bench_relay(work: Path, count: int = 5_000) -> float:
    from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
    from dagster._core.events.log import EventLogEntry

    with DagsterInstance.from_config(str(_sqlite_home(work / "relay_home"))) as instance:
        event = DagsterEvent(DagsterEventType.ENGINE_EVENT.value, job_name="j", event_specific_data=EngineEventData())
        lines = "".join(
            relay_protocol.protocol_line(
                i + 1,
                relay_protocol.EVENT,
                serialize_value(EventLogEntry(None, 20, f"event {i}", "relay-run", float(i), dagster_event=event)),
            )
            for i in range(count)
        )
        relay = EventRelay(instance, "relay-run", work / "relay.cursor")
        chunks = [lines[i : i + 32 * 1024] for i in range(0, len(lines), 32 * 1024)]
        started = time.perf_counter()
        for chunk in chunks:
            relay.feed(chunk)
        relay.close()
        elapsed = time.perf_counter() - started
        assert relay.events_stored == count
        return count / elapsed


def _sqlite_home(home: Path) -> Path:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    return home


def main() -> None:
    WORK_BASE.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=WORK_BASE) as tmp,
        LocalSandboxServer(port=0, extra_path=[str(Path(sys.executable).parent)]) as server,
    ):
        work = Path(tmp)
        local_wall, local_start = bench_local(work)
        remote_start, remote_run, remote_wall = bench_remote(work, server)
        pool_start, pool_run, pool_wall = bench_remote(work, server, pool=True)
        print(
            f"local  dagster job execute: wall {local_wall:.2f} s, "
            f"process start -> first STEP_START {local_start:.2f} s"
        )
        for label, start, run, wall in (
            ("remote (cold)     ", remote_start, remote_run, remote_wall),
            ("remote (warm pool)", pool_start, pool_run, pool_wall),
        ):
            print(f"{label} launch_run -> first STEP_START {start:.2f} s, -> RUN_SUCCESS {run:.2f} s, "
                  f"-> session complete {wall:.2f} s")  # fmt: skip
        print(f"overhead (remote start-up - local start-up): cold {remote_start - local_start:+.2f} s "
              f"(target <= 1.0 s), warm pool {pool_start - local_start:+.2f} s (target <= 0.3 s)")  # fmt: skip
        print(f"remote/local wall: cold {remote_wall / local_wall:.2f}x, warm pool {pool_wall / local_wall:.2f}x"
              "   (target <= 1.5x)")  # fmt: skip
        for files in (10, 100, 1000):
            print(f"artifacts copy, {files:>5} files in one archive: {bench_copy(server, files) * 1000:.0f} ms"
                  "   (target <= 100 ms, flat)")  # fmt: skip
        print(f"relay throughput into sqlite: {bench_relay(work):,.0f} events/s   (target >= 5,000)")


if __name__ == "__main__":
    main()
