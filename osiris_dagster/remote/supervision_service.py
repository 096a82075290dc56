"""ONE host process per DAGSTER_HOME that supervises every remote run, each as a thread.

A run's supervision (`supervisor.RunSupervisor`) is mostly waiting: on the sandbox's stream, on
file transfers, on storage writes. A process per run paid for its own interpreter and its own
Dagster import (~140 MB each); here they are paid once, and each run costs a thread.

``python -m osiris_dagster.remote.supervision_service <DAGSTER_HOME> [--idle-s N]``, started by
`supervision_client.hand_over` when no service answers:

* **Singleton**: it holds ``flock(<DAGSTER_HOME>/e2b/service.lock)`` for its whole life; a second
  one started meanwhile finds it taken and waits (at most 30 s) until no spooled run lacks a
  supervisor — the holder takes them up — then exits; if the holder exits first, it serves. Only
  the holder listens on the unix socket (`ServicePaths.address`).
* **Hand-over**: per connection, one JSON line ``{"run_dir", "resume", "env"}``. The run is
  written to the spool (``e2b/spool/<run id>``, without ``env``) and its supervision lock taken
  (`run_lock`) BEFORE the answer, so an acknowledged run is never lost: if the service dies, the
  lock is released (run monitoring sees it and calls `resume_run`) and the spool entry remains
  (the next service picks it up when it starts, resuming from the run's state). A launcher that
  finds no service writes the spool entry itself and starts one; the service rescans the spool
  every half second, so such runs are taken up whichever service holds the lock.
* **Environment**: a handed-over run's variables (connections, ``OSIRIS_PARAM_*``) and the SDK's
  settings (`settings.SDK_ENV`: API key, domain, server URL) are the launching process's, sent
  with the hand-over; the service's own SDK settings never apply to it, so a rotated key or a
  moved server takes effect at the next launch although the service lives on. A run taken from
  the spool has only the service's environment (that of the process that started it).
* **Idle exit**: with no run for ``--idle-s`` seconds AND no live launcher of this home (it can
  take ``e2b/launchers.lock`` exclusively: `supervision_client.prewarm`) it stops
  listening and exits. It keeps that lock while it closes the socket, so a launcher loading
  meanwhile waits and then finds no service (and starts one), never a service about to vanish.
* **Warm-up**: once listening, a thread imports what supervising needs — the e2b SDK and the
  modules a run uses before it has a sandbox first, then Dagster and this home's storage. A
  resident service has it all loaded when the first run arrives; a service started for a launch
  overlaps the Dagster part with the sandbox's creation. Run threads wait for each part before
  they use it (`_WarmUp`) rather than import it themselves: Dagster's storage package has import
  cycles, and two threads importing it at once fail ("partially initialized module"), as three
  runs handed to a fresh service at once did. Measured on the 2-core dev box (idle): interpreter
  + this module ~0.1 s; e2b SDK 0.4-1.1 s; Dagster 0.6-2 s; storage modules ~0.1 s.

Each run's records go to its own ``supervisor.log`` (`supervision_logs`); the service's own to
``e2b/service.log``.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import importlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from osiris_dagster.remote import run_lock, supervision_client, supervision_logs
from osiris_dagster.remote.run_files import RunFiles
from osiris_dagster.remote.run_lock import RunLock
from osiris_dagster.remote.settings import SDK_ENV
from osiris_dagster.remote.supervision_client import ServicePaths, read_line, spool_run
from osiris_dagster.secrets import mask_text

log = logging.getLogger("osiris_dagster.remote.supervision_service")

DEFAULT_IDLE_S = 60.0
# How often the accept loop wakes to check for idleness.
_TICK_S = 0.5


class SupervisionService:
    def __init__(self, paths: ServicePaths, idle_s: float, fresh_run: str | None = None) -> None:
        self.paths = paths
        self.idle_s = idle_s
        # The run the launcher that started this service spooled a moment ago (`start_service`).
        self._fresh_run = fresh_run
        self._guard = threading.Lock()
        self._active: set[str] = set()
        self._idle_since = time.monotonic()
        # Held (exclusively) from the moment the service decides to exit: no launcher is alive.
        self._launchers_lock: int | None = None
        self._warm_up = _WarmUp()

    # -- life ---------------------------------------------------------------------
    def serve(self) -> int:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.spool.mkdir(exist_ok=True)
        service_lock = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not self._take_service_lock(service_lock):
            return 0  # another service serves this home and has taken up every spooled run
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.paths.address)
        listener.listen(64)
        listener.settimeout(_TICK_S)
        log.info(
            "supervision service %d serving %s (idle exit after %.0f s without a run and without a live launcher)",
            os.getpid(),
            self.paths.root,
            self.idle_s,
        )
        self._warm_up.start(self.paths.root.parent)
        try:
            while not self._idle_too_long():
                self._pick_up_spool()  # runs spooled by a launcher that found no listener, or a dead service
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    self._answer(connection)
        finally:
            # Stop listening BEFORE the lock goes: a launcher then either reaches this service
            # (and got an answer) or finds no listener and starts the next service.
            listener.close()
            log.info("supervision service %d exits: no run for %.0f s and no live launcher", os.getpid(), self.idle_s)
            os.close(service_lock)
            if self._launchers_lock is not None:
                os.close(self._launchers_lock)
        return 0

    def _take_service_lock(self, fd: int) -> bool:
        """The service lock; without it, wait while a spooled run lacks a supervisor (bounded)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline or not self._unsupervised_spool():
                    os.close(fd)
                    return False
            time.sleep(0.2)

    def _unsupervised_spool(self) -> bool:
        for entry in self.paths.spool.iterdir():
            if entry.name.startswith("."):
                continue
            if not run_lock.is_held(RunFiles(self._spooled_dir(entry)).supervision_lock):
                return True
        return False

    def _spooled_dir(self, entry: Path) -> Path:
        try:
            return Path(json.loads(entry.read_text(encoding="utf-8"))["run_dir"])
        except (OSError, ValueError, KeyError):
            return entry  # unreadable: counts as unsupervised until the holder removes it

    def _idle_too_long(self) -> bool:
        with self._guard:
            idle = not self._active and time.monotonic() - self._idle_since > self.idle_s
        return idle and self._no_live_launcher()

    def _no_live_launcher(self) -> bool:
        """Take ``launchers.lock`` exclusively (kept until exit) if no process holds a launcher."""
        fd = os.open(self.paths.launchers, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._launchers_lock = fd
        return True

    # -- hand-overs ----------------------------------------------------------------
    def _answer(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(10)
            request = json.loads(read_line(connection))
            if request.get("ping"):  # a launcher asking whether a service is up (`supervision_client.ping`)
                connection.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
                return
            run_dir = Path(request["run_dir"])
            resume = bool(request.get("resume"))
            env = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
            if not RunFiles(run_dir).spec.is_file():
                raise ValueError(f"no run spec in {run_dir}")
            spool_run(self.paths, run_dir, resume)
            self._supervise(run_dir, resume, env, from_spool=False)
            reply: dict[str, Any] = {"pid": os.getpid()}
        except Exception as error:
            log.warning("hand-over refused: %s", mask_text(f"{type(error).__name__}: {error}"))
            reply = {"error": mask_text(f"{type(error).__name__}: {error}")}
        try:
            connection.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as error:  # the launcher gave up waiting; it retries, and finds the run taken
            log.warning("could not answer a hand-over: %s", error)

    def _pick_up_spool(self) -> None:
        """Runs handed to a service that died: supervise them again (resuming where they got to)."""
        for entry in sorted(self.paths.spool.iterdir()):
            if entry.name.startswith(".") or entry.name in self._active:
                continue
            try:
                spooled = json.loads(entry.read_text(encoding="utf-8"))
                run_dir = Path(spooled["run_dir"])
            except (OSError, ValueError, KeyError):
                entry.unlink(missing_ok=True)
                continue
            if not RunFiles(run_dir).spec.is_file():  # pruned or never complete
                entry.unlink(missing_ok=True)
                continue
            # A run whose worker had started is reattached, never started a second time.
            resume = bool(spooled.get("resume")) or _worker_started(RunFiles(run_dir))
            if run_lock.is_held(RunFiles(run_dir).supervision_lock):
                continue  # supervised elsewhere (a standalone supervisor)
            fresh = entry.name == self._fresh_run and not resume
            self._fresh_run = None if fresh else self._fresh_run
            log.info(
                "picking up run %s from the spool%s",
                run_dir.name,
                " (resuming)" if resume else " (launched with this service)" if fresh else "",
            )
            self._supervise(run_dir, resume, None, from_spool=not fresh)

    def _supervise(self, run_dir: Path, resume: bool, env: dict[str, str] | None, *, from_spool: bool) -> None:
        """Take the run's lock and start its thread; a run already supervised is left alone."""
        files = RunFiles(run_dir)
        lock = RunLock.try_acquire(files.supervision_lock)
        if lock is None:
            log.info("run %s is already supervised", run_dir.name)
            return
        with self._guard:
            self._active.add(run_dir.name)
        thread = threading.Thread(
            target=self._run, args=(files, resume, env, lock, from_spool), name=f"run-{run_dir.name}", daemon=True
        )
        thread.start()

    def _run(self, files: RunFiles, resume: bool, env: dict[str, str] | None, lock: RunLock, from_spool: bool) -> None:
        try:
            with supervision_logs.bound_to(files.log):
                try:
                    self._warm_up.sdk.wait()
                    from osiris_dagster.remote.supervisor import RunSpec, RunSupervisor

                    supervisor = RunSupervisor(
                        RunSpec.read(files.spec),
                        files,
                        environ=run_environ(os.environ, env),
                        before_dagster=self._warm_up.dagster.wait,
                    )
                    try:
                        if from_spool and supervisor.run_finished():
                            log.info("the run had finished before this service started: nothing to do")
                        else:
                            if from_spool:
                                supervisor.taken_up_by(os.getpid())
                            supervisor.run(resume=resume)
                    finally:
                        supervisor.close()
                except Exception:
                    logging.getLogger("osiris_dagster.remote.supervisor").exception("supervision failed")
        finally:
            (self.paths.spool / files.root.name).unlink(missing_ok=True)
            lock.release()
            with self._guard:
                self._active.discard(files.root.name)
                self._idle_since = time.monotonic()


class _WarmUp:
    """The service's imports, in one thread, in the order a run needs them (see the module doc)."""

    def __init__(self) -> None:
        self.sdk = threading.Event()  # the e2b SDK and what a run uses before it has a sandbox
        self.dagster = threading.Event()  # Dagster, the relay, this home's storage

    def start(self, dagster_home: Path) -> None:
        threading.Thread(target=self._run, args=(dagster_home,), name="warm-up", daemon=True).start()

    def _run(self, dagster_home: Path) -> None:
        started = time.perf_counter()
        try:
            for name in _SDK_SIDE:
                importlib.import_module(name)
            sdk = time.perf_counter()
            self.sdk.set()
            for name in _DAGSTER_SIDE:
                importlib.import_module(name)
            dagster = time.perf_counter()
            from dagster._core.instance.ref import InstanceRef

            # This home's storage classes, imported, not constructed: constructing an instance
            # creates a fresh home's sqlite schema, and several processes doing that at once
            # race in Dagster's own alembic stamping ("more than one head").
            ref = InstanceRef.from_dir(str(dagster_home))
            for data in (ref.storage_data, ref.run_storage_data, ref.event_storage_data, ref.compute_logs_data):
                if data is not None:
                    importlib.import_module(data.module_name)
            importlib.import_module("alembic.command")  # what a storage's schema check loads
            _freeze_imported_objects()
        except Exception as error:  # an optimisation only: a run imports what it needs itself
            log.warning("warm-up: %s", mask_text(f"{type(error).__name__}: {error}"))
            return
        finally:
            self.sdk.set()
            self.dagster.set()
        log.info(
            "warm-up: e2b SDK %d ms, Dagster %d ms, storage %d ms",
            1000 * (sdk - started),
            1000 * (dagster - sdk),
            1000 * (time.perf_counter() - dagster),
        )


def _freeze_imported_objects() -> None:
    """Move everything alive now (~220k objects: the modules just imported) out of the collector's
    reach for the service's life.

    They never become garbage, yet every full collection walked them all: 116 ms each, measured
    with these imports on the dev box, holding the GIL, so every run's relay stood still meanwhile
    (and the relay's own allocations trigger full collections regularly). Frozen, a full
    collection walks only what runs allocated since. The cost: objects of a run already in flight
    when the warm-up ends (the first run of a fresh service) are frozen too; the few of them that
    later become cyclic garbage are never freed — bounded, once per service.
    """
    gc.collect()
    gc.freeze()


# What a run imports before it has a sandbox: no Dagster (checked by a test).
_SDK_SIDE = (
    "osiris_dagster.remote.supervisor",
    "osiris_dagster.remote.bundle",
    "osiris_dagster.remote.sandbox_pool",
)
# What a run imports once its worker is started: the relay (Dagster, SQLAlchemy, the batch
# writer), the copy-back and the session log. Not the launcher, nor `job_needs`: they bring the
# product's spec stack (jsonschema, the component registry: ~14 MB), which a run does not use here.
_DAGSTER_SIDE = (
    "osiris_dagster.remote.event_relay",
    "osiris_dagster.remote.bundle",
    "osiris_dagster.remote.compute_logs",
    "osiris_dagster.remote.result_archive",
    "osiris_dagster.session.session_log",
)


def _worker_started(files: RunFiles) -> bool:
    try:
        return json.loads(files.state.read_text(encoding="utf-8")).get("worker_pid") is not None
    except (OSError, ValueError):
        return False


def run_environ(service_environ: Mapping[str, str], handed_over: dict[str, str] | None) -> dict[str, str]:
    """Where a run's variable values come from: the hand-over's, else the service's own.

    With a hand-over, the SDK's settings come from it alone: one the launching process did not set
    must not be filled in from whoever started the service (see the module doc, "Environment").
    """
    if handed_over is None:
        return dict(service_environ)
    kept = {name: value for name, value in service_environ.items() if name not in SDK_ENV}
    return {**kept, **handed_over}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.splitlines()[0])
    parser.add_argument("dagster_home", type=Path)
    parser.add_argument("--idle-s", type=float, default=DEFAULT_IDLE_S, help="exit after this long with no run")
    parser.add_argument("--fresh-run", help="the run the launcher starting this service has just spooled")
    args = parser.parse_args(argv)
    supervision_client.IN_SERVICE = True
    sys.stdout = supervision_logs.MaskedStream(sys.stdout)  # type: ignore[assignment]
    sys.stderr = supervision_logs.MaskedStream(sys.stderr)  # type: ignore[assignment]
    supervision_logs.install(sys.stderr)
    return SupervisionService(ServicePaths.for_home(args.dagster_home), args.idle_s, args.fresh_run).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
