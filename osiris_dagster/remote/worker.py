"""The sandbox side of a remote run: preflight, seed, `dagster api execute_run`, relay, pack.

Started by the supervisor as ``python -m osiris_dagster.remote.worker`` in ``~/osiris`` (where
the bundle was extracted). Its stdout carries only `relay_protocol` lines; everything else goes
to stderr. In order:

1. **Preflight** (standard library only, so it works in a sandbox without Dagster): the installed
   Dagster (and, when installed, the product) must be the host's release, else exit 4 within
   seconds naming both versions and the fix — a run serialized by one Dagster and executed by
   another fails in obscure ways, or worse, not at all; find the modules the run needs; with
   ``install_deps`` pip-install the missing ones from the uploaded wheels; if some are still
   missing, exit 3 within seconds, naming them and both fixes.
2. **Seed** a sandbox-local sqlite ``DAGSTER_HOME`` with the job and plan snapshots and the run,
   its origin rewritten to this sandbox's interpreter and project folder.
3. **Execute** the stock ``dagster api execute_run`` in a forked child. Forking after Dagster and
   the code location are imported saves a second interpreter start-up (~1.5 s on 2 cores); the
   child's stdout is pointed at stderr so it can never tear a protocol line.
4. **Relay** each ``EventLogEntry`` into the durable, sequence-numbered log
   (`relay_protocol.DurableLog`, which also prints it), in storage-id order. A run executed in
   one process (the in-process executor, the default) stores its events in memory and relays each
   as it is stored (`relayed_event_log`: no sqlite commit, no poll); a multiprocess run keeps the
   on-disk sqlite log, which the worker tails with ``get_records_for_run``.
5. **Pack** the session dir, the outputs the run reported and the compute logs into one archive.
6. Emit ``exit {"code": n}`` as the last line, so a host that reconnects after the worker ended
   still learns how it ended.

On SIGTERM (the supervisor's cancel) the local run is marked CANCELING *before* the child is
interrupted, so Dagster ends it as CANCELED rather than "interrupted unexpectedly".
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from osiris_dagster.project import PUBLISHED_DIR_ENV
from osiris_dagster.remote import relay_protocol as protocol

EXIT_MISSING_DEPENDENCIES = 3
EXIT_VERSION_MISMATCH = 4
PID_FILE = "worker.pid"
DEPS_DIR = "deps"
_POLL_S = 0.02
_BATCH = 2000


_log_file: protocol.DurableLog | None = None


def _durable() -> protocol.DurableLog:
    global _log_file
    if _log_file is None:
        _log_file = protocol.DurableLog(protocol.DURABLE_LOG, sys.stdout)
    return _log_file


def _log(message: str) -> None:
    print(f"[osiris worker] {message}", file=sys.stderr, flush=True)


def version_mismatches(host: dict[str, str]) -> list[str]:
    """`name host X, sandbox Y` for each distribution installed here at another version than the host's.

    A distribution missing here is not a mismatch: the product's code travels in the bundle, and a
    missing Dagster is the module preflight's to report."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for distribution, wanted in host.items():
        try:
            installed = version(distribution)
        except PackageNotFoundError:
            continue
        if installed != wanted:
            found.append(f"{distribution} {wanted} on the host, {installed} in the sandbox")
    return found


def preflight(modules: list[str], install: dict[str, Any] | None, python: str) -> list[str]:
    """Check (and optionally install) the run's modules; return those still missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    _durable().control(protocol.PREFLIGHT, {"missing": missing, "present": [m for m in modules if m not in missing]})
    if missing and install is not None:
        requirements = [install["requirements"].get(m, m) for m in missing]
        # Into the sandbox's own ``deps/`` (already on PYTHONPATH), never into the interpreter's
        # site-packages: with the local backend that interpreter is the host's.
        command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--target", DEPS_DIR]
        command += install["pip_args"]
        if Path("wheels").is_dir():
            command += ["--no-index", "--find-links", "wheels"]
        _log(f"installing {' '.join(requirements)}")
        subprocess.run([*command, *requirements], stdout=sys.stderr, stderr=sys.stderr, check=False)
        importlib.invalidate_caches()
        still = [m for m in missing if importlib.util.find_spec(m) is None]
        _durable().control(
            protocol.INSTALLED, {"now_present": [m for m in missing if m not in still], "still_missing": still}
        )
        missing = still
    return missing


def seed_instance(payload: dict[str, str], project_dir: Path) -> tuple[str, Any]:
    """Add the snapshots and the run (origin rewritten to sandbox paths) to the local instance."""
    from dagster import DagsterInstance, deserialize_value
    from dagster._core.snap import ExecutionPlanSnapshot, JobSnap
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    run = deserialize_value(payload["run"], DagsterRun)
    origin = run.job_code_origin
    if origin is not None:
        repository = origin.repository_origin
        pointer = repository.code_pointer
        if hasattr(pointer, "working_directory"):
            pointer = pointer._replace(working_directory=str(project_dir))
        repository = repository._replace(executable_path=sys.executable, code_pointer=pointer)
        origin = origin._replace(repository_origin=repository)
    run = run.with_status(DagsterRunStatus.STARTING)._replace(job_code_origin=origin)
    with DagsterInstance.get() as instance:
        instance.add_snapshot(deserialize_value(payload["job_snapshot"], JobSnap))
        instance.add_snapshot(deserialize_value(payload["plan_snapshot"], ExecutionPlanSnapshot))
        instance.add_run(run)
    return run.run_id, origin


def _execute_run_child(run_id: str, origin: Any, relay_events: bool) -> None:
    """In the forked child: the stock `dagster api execute_run`, never returning.

    With ``relay_events`` the run's in-memory event log relays each event into the durable log
    (on the protocol stdout, kept before fd 1 is pointed at stderr)."""
    code = 1
    try:
        if relay_events:
            from osiris_dagster.remote import relayed_event_log

            _durable().keep_stdout()
            # As often as the poll used to print: the host stores a chunk's events in one transaction.
            _durable().coalesce_stdout(_POLL_S)
            relayed_event_log.relay_to(_durable())
        os.dup2(2, 1)
        from dagster._cli.api import execute_run_command
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        args = serialize_value(ExecuteRunArgs(job_origin=origin, run_id=run_id, instance_ref=None))
        execute_run_command.main(args=[args], prog_name="dagster api execute_run", standalone_mode=False)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException as error:  # report, then leave: the parent relays whatever was stored
        _log(f"execute_run failed: {type(error).__name__}: {error}")
    finally:
        _durable().flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def uses_relayed_event_log(payload: dict[str, str]) -> bool:
    """Is the run executed in one process, so its events can live in memory and be relayed as stored?

    The multiprocess executor (chosen by run config, `recording_executor`) stores events from one
    process per step: those runs need the on-disk log every process writes to."""
    from dagster import deserialize_value
    from dagster._core.storage.dagster_run import DagsterRun

    execution = (deserialize_value(payload["run"], DagsterRun).run_config or {}).get("execution") or {}
    return "multiprocess" not in (execution.get("config") or {})


def relay_and_wait(run_id: str, child: int, poll_events: bool) -> int:
    """Wait for the child; with ``poll_events``, print every stored event until the log is drained.

    Without it the child relays its events itself (`relayed_event_log`) and this only waits and
    forwards a cancel."""
    from dagster import DagsterInstance
    from dagster._serdes import serialize_value

    exit_code: int | None = None
    cursor: str | None = None
    cancel_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: cancel_requested.append(signum))
    # Only the poll needs an instance here (a cancel opens its own): the child relays otherwise.
    with DagsterInstance.get() if poll_events else contextlib.nullcontext() as instance:
        while True:
            if cancel_requested and exit_code is None:
                cancel_requested.clear()
                _cancel(run_id, child)
            if exit_code is None:
                pid, status = os.waitpid(child, os.WNOHANG)
                if pid:
                    exit_code = os.waitstatus_to_exitcode(status)
            if instance is None:
                if exit_code is not None:
                    return exit_code
                time.sleep(_POLL_S)
                continue
            connection = instance.get_records_for_run(run_id, cursor=cursor, limit=_BATCH)
            if connection.records:
                _durable().emit_many([(protocol.EVENT, serialize_value(r.event_log_entry)) for r in connection.records])
                cursor = connection.cursor
            if connection.has_more:
                continue
            if exit_code is not None:
                return exit_code
            time.sleep(_POLL_S)


def _cancel(run_id: str, child: int) -> None:
    from dagster import DagsterInstance
    from dagster._core.events import DagsterEvent, DagsterEventType

    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            # Status only (no stored event): the host already recorded its own CANCELING.
            event = DagsterEvent(DagsterEventType.PIPELINE_CANCELING.value, job_name=run.job_name)
            instance.run_storage.handle_run_event(run_id, event)
    _log("cancel requested: run marked CANCELING, interrupting execute_run")
    os.kill(child, signal.SIGINT)


def pack(run_id: str, project_dir: Path, dagster_home: Path) -> None:
    from osiris_dagster.project import ProjectLayout
    from osiris_dagster.remote.result_archive import RESULT_NAME, output_paths, pack_result

    session_dir = ProjectLayout.discover(project_dir).session_dir(run_id)
    archive = Path(RESULT_NAME).resolve()
    files = pack_result(
        archive,
        project_dir,
        session_dir,
        output_paths(session_dir / "events.jsonl"),
        dagster_home / "storage" / run_id / "compute_logs",
    )
    _durable().control(protocol.RESULT, {"name": RESULT_NAME, "files": files, "bytes": archive.stat().st_size})


def main() -> int:
    """Run the worker; whatever happens, the durable log's last line says how it ended."""
    code = 1
    try:
        code = _run()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        raise
    finally:
        _durable().control(protocol.EXIT, {"code": code})
    return code


def _run() -> int:
    spec = json.loads(os.environ["OSIRIS_WORKER_SPEC"])
    Path(PID_FILE).write_text(str(os.getpid()))
    started = time.perf_counter()
    mismatches = version_mismatches(spec.get("versions") or {})
    if mismatches:
        _log(
            "version mismatch between host and sandbox: " + "; ".join(mismatches) + ". Fix: rebuild the "
            "sandbox template from the host's environment (`osiris-dagster e2b template build`, which pins "
            "the host's versions) or install the host's versions (pip install -c constraints.txt ...)."
        )
        return EXIT_VERSION_MISMATCH
    if spec.get("host_project_dir"):
        os.environ[PUBLISHED_DIR_ENV] = spec["host_project_dir"]
    missing = preflight(spec["modules"], spec.get("install"), sys.executable)
    if missing:
        _log(
            "missing Python modules in the sandbox: " + ", ".join(missing) + ". Fix: use a template that has them "
            "(run_launcher.config.template, see `osiris-dagster e2b template build`), or set "
            "run_launcher.config.install_deps: true (with wheel_dir for offline installs)."
        )
        return EXIT_MISSING_DEPENDENCIES
    project_dir = Path("project").resolve()
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    payload = json.loads(Path("run/payload.json").read_text(encoding="utf-8"))
    relay_events = uses_relayed_event_log(payload)
    if relay_events:
        from osiris_dagster.remote.relayed_event_log import dagster_yaml

        (dagster_home / "dagster.yaml").write_text(dagster_yaml())
    else:
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    checked = time.perf_counter()
    run_id, origin = seed_instance(payload, project_dir)
    seeded = time.perf_counter()
    import osiris_dagster.definitions  # noqa: F401  (the code location, loaded once before the fork)

    _log(
        f"start-up: preflight {1000 * (checked - started):.0f} ms, seed {1000 * (seeded - checked):.0f} ms, "
        f"code location {1000 * (time.perf_counter() - seeded):.0f} ms"
    )

    _durable().control(protocol.STARTED, {})
    child = os.fork()
    if child == 0:
        _execute_run_child(run_id, origin, relay_events)
    forked = time.perf_counter()
    exit_code = relay_and_wait(run_id, child, poll_events=not relay_events)
    executed = time.perf_counter()
    pack(run_id, project_dir, dagster_home)
    _log(
        f"run: execute {1000 * (executed - forked):.0f} ms ({'relayed as stored' if relay_events else 'polled'}, "
        f"{_durable().seq} lines), pack {1000 * (time.perf_counter() - executed):.0f} ms"
    )
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
