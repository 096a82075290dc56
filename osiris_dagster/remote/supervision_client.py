"""What the launcher calls to hand a run to the supervision service (starting the service if need be).

One service per DAGSTER_HOME (`supervision_service`) supervises every remote run of that
instance. `hand_over` sends it one line of JSON on its unix socket and waits for the answer,
which comes only once the run is written to the service's spool and its supervision lock is
held: from then on the run is supervised, or — if the service dies — picked up again by the next
service. If no service answers, the launcher writes the spool entry itself and starts a service
(detached, in its own session, so it outlives a ``dagster job launch``) without waiting for it:
`launch_run` returns at once, and the service takes the run up from the spool. Two launchers
doing so at once start two processes: one wins the service lock, the other waits until the
winner has taken up every spooled run (or has exited, then it serves itself).

**Resident service** (`prewarm`): a process that loads the launcher (the daemon, the webserver,
a code server, ``dagster job launch``) starts the service at once, in the background, and holds
a SHARED ``flock`` on ``e2b/launchers.lock`` for the rest of its life. The service
exits only when it has had no run for ``supervision_idle_s`` AND can take that lock exclusively,
i.e. no process with a launcher of this home is alive. So the daemon's first launch finds a
service that is up and has imported the e2b SDK and Dagster (a fresh one is ~2 s from
``launch_run`` to creating the sandbox); a ``dagster job launch`` that exits leaves a service
that idles out as before. A flock and not a pid file: the kernel drops it when the holder dies,
``kill -9`` included, so a dead launcher never keeps a service alive.

Kept free of Dagster and e2b imports: the launcher side needs only sockets and paths.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_MODULE = "osiris_dagster.remote.supervision_service"
# An answer takes a spool write and a lock; a busy service may take a while to accept.
_ANSWER_TIMEOUT_S = 30.0
_MAX_MESSAGE = 1 << 20
# How long a launch waits for a service THIS process started to listen, before it spools the run
# instead (a fresh service listens ~0.1-0.2 s after its start; the wait is for a loaded machine).
_LISTEN_WAIT_S = 5.0
# How long a launcher waits for the shared presence lock: only a service that is exiting holds it
# exclusively, for the few ms between deciding to exit and closing its socket.
_PRESENCE_WAIT_S = 5.0
# True inside the service process: its own Dagster instance must not count as a launcher.
IN_SERVICE = False
# Services this process's prewarm started, by home, until one answers: a launch waits for such a
# service to listen (`hand_over`). Not those a launch starts for a run it spooled: nobody waits.
_started: dict[Path, subprocess.Popen[bytes]] = {}
_started_guard = threading.Lock()
# Homes whose ``launchers.lock`` this process holds shared, with the descriptor (never closed:
# the kernel drops the lock when the process ends, `kill -9` included).
_presence: dict[Path, int] = {}
_presence_guard = threading.Lock()


@dataclass(frozen=True)
class ServicePaths:
    """The service's files, under ``<DAGSTER_HOME>/e2b/`` beside the run folders."""

    root: Path

    @classmethod
    def for_home(cls, instance_root: str | os.PathLike[str]) -> ServicePaths:
        return cls(Path(instance_root).resolve() / "e2b")

    @property
    def lock(self) -> Path:
        """flock'ed by the one service of this home for its whole life."""
        return self.root / "service.lock"

    @property
    def launchers(self) -> Path:
        """flock'ed SHARED by each live process holding a launcher of this home (`prewarm`)."""
        return self.root / "launchers.lock"

    @property
    def spool(self) -> Path:
        """One file per handed-over run, until its supervision ends: what a restarted service picks up."""
        return self.root / "spool"

    @property
    def log(self) -> Path:
        """The service's own output (start, stop, hand-overs); each run logs to its own supervisor.log."""
        return self.root / "service.log"

    @property
    def address(self) -> str:
        """An abstract-namespace socket name: no file to go stale, no 108-byte path limit."""
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:24]
        return f"\0osiris-dagster-supervision-{digest}"


class HandOverError(RuntimeError):
    pass


def hand_over(
    instance_root: str | os.PathLike[str],
    run_dir: Path,
    *,
    resume: bool = False,
    env: dict[str, str] | None = None,
    idle_s: float = 60.0,
) -> int:
    """Give the run in ``run_dir`` to this home's service; return the service's pid.

    ``env`` holds the values of the variables the run needs, read from the launching process's
    environment: they travel in memory over the socket only, never into the spool.
    """
    paths = ServicePaths.for_home(instance_root)
    paths.root.mkdir(parents=True, exist_ok=True)
    message = json.dumps({"run_dir": str(run_dir), "resume": resume, "env": env or {}}).encode() + b"\n"
    try:
        return _answered(paths, _exchange(paths.address, message))
    except (OSError, ValueError, KeyError):  # no service listening (or it is exiting)
        pass
    # A service this process's prewarm started (at launcher load) that has not answered yet: wait
    # for it to listen — or for the service it gave way to — rather than spool the run
    # and start another one. That fallback works too, but its run is tagged with the pid of a
    # service that then exits, until the winner's spool pick-up re-tags it: a race the tag can lose.
    started = _started.get(paths.root)
    deadline = time.monotonic() + _LISTEN_WAIT_S
    while started is not None and time.monotonic() < deadline:
        # Exit code 0: it lost the service lock to a live service, which listens a moment later
        # (it binds the socket right after taking the lock). Any other end: stop waiting.
        crashed = started.poll() not in (None, 0)
        time.sleep(0.01)
        try:
            return _answered(paths, _exchange(paths.address, message))
        except (OSError, ValueError, KeyError):
            if crashed:
                break
    # Durable first, then the service: it reads the values of the run's variables from its own
    # environment, which is this process's (the spool never holds a value).
    spool_run(paths, run_dir, resume)
    return start_service(paths, idle_s, fresh_run=None if resume else run_dir.name).pid


def _answered(paths: ServicePaths, reply: dict[str, Any]) -> int:
    """A service answered: the one this process started is up (or gave way), no longer waited for.

    Forgetting it matters: a service that later idles out exits 0 too, and a launch must not take
    that for "gave way to another" and wait for a listener that will never come.
    """
    with _started_guard:
        _started.pop(paths.root, None)
    return int(reply["pid"])


def spool_run(paths: ServicePaths, run_dir: Path, resume: bool) -> None:
    """Write the run's spool entry atomically (it stays until the run's supervision ends)."""
    paths.spool.mkdir(parents=True, exist_ok=True)
    entry = paths.spool / run_dir.name
    temp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps({"run_dir": str(run_dir), "resume": resume}), encoding="utf-8")
    os.replace(temp, entry)


def _exchange(address: str, message: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(_ANSWER_TIMEOUT_S)
        connection.connect(address)
        connection.sendall(message)
        answer = read_line(connection)
    reply = json.loads(answer)
    if "error" in reply:
        raise HandOverError(f"the E2B supervision service refused the run: {reply['error']}")
    return reply


def read_line(connection: socket.socket) -> bytes:
    """One newline-terminated message (bounded); EOF before the newline is an error."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionResetError("the peer closed the connection before a full message")
        data += chunk
        if len(data) > _MAX_MESSAGE:
            raise ValueError("message too long")
    return data


def start_service(paths: ServicePaths, idle_s: float, fresh_run: str | None = None) -> subprocess.Popen[bytes]:
    """A service process for this home (it exits at once if another one holds the service lock).

    ``fresh_run``: the run just spooled by this launch. That service takes it up as a hand-over
    (no check that the run has not finished meanwhile, which would import Dagster before the
    sandbox is created): it was launched a moment ago. Any other service checks it as usual.
    """
    command = [sys.executable, "-m", SERVICE_MODULE, str(paths.root.parent), "--idle-s", str(idle_s)]
    if fresh_run is not None:
        command += ["--fresh-run", fresh_run]
    with open(paths.log, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    # Reap it when it ends (the launching process may live on, e.g. the daemon).
    threading.Thread(target=process.wait, name=f"reap-supervision-{process.pid}", daemon=True).start()
    return process


def ping(paths: ServicePaths) -> int | None:
    """The pid of this home's listening service, or None if none answers."""
    try:
        return _answered(paths, _exchange(paths.address, b'{"ping": true}\n'))
    except (OSError, ValueError, KeyError, HandOverError):
        return None


def prewarm(instance_root: str | os.PathLike[str], idle_s: float) -> subprocess.Popen[bytes] | None:
    """Hold this home's presence lock (for the rest of this process) and make sure a service is up.

    Returns the service started here, or None if one answered. Never waits for the service:
    loading an instance must stay fast. The lock is held per process, not per launcher object:
    a code server loads and disposes an instance at every reaper evaluation (every 30 s), and a
    lock released at each dispose let the service idle out between evaluations and start again
    at the next. Only a service in the middle of exiting can make the shared lock wait (it holds
    it exclusively while it closes its socket), so after the lock a service either answers the
    ping or is gone for good.
    """
    paths = ServicePaths.for_home(instance_root)
    paths.root.mkdir(parents=True, exist_ok=True)
    with _presence_guard:
        if paths.root not in _presence:
            fd = _hold_presence(paths)
            if fd is not None:
                _presence[paths.root] = fd
    if ping(paths) is not None:
        return None
    process = start_service(paths, idle_s)
    with _started_guard:  # the launch to come waits for it to listen (`hand_over`)
        _started[paths.root] = process
    return process


def _hold_presence(paths: ServicePaths) -> int | None:
    """A shared flock on ``launchers.lock``; close-on-exec, so nothing this process execs inherits it."""
    fd = os.open(paths.launchers, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + _PRESENCE_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:  # cannot happen with a live service; do without
                os.close(fd)
                return None
            time.sleep(0.01)
