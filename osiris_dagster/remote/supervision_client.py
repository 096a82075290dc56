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

Kept free of Dagster and e2b imports: the launcher side needs only sockets and paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_MODULE = "osiris_dagster.remote.supervision_service"
# An answer takes a spool write and a lock; a busy service may take a while to accept.
_ANSWER_TIMEOUT_S = 30.0
_MAX_MESSAGE = 1 << 20


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
        return int(_exchange(paths.address, message)["pid"])
    except (OSError, ValueError, KeyError):  # no service listening (or it is exiting)
        pass
    # Durable first, then the service: it reads the values of the run's variables from its own
    # environment, which is this process's (the spool never holds a value).
    spool_run(paths, run_dir, resume)
    return start_service(paths, idle_s).pid


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


def start_service(paths: ServicePaths, idle_s: float) -> subprocess.Popen[bytes]:
    """A service process for this home (it exits at once if another one holds the service lock)."""
    with open(paths.log, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", SERVICE_MODULE, str(paths.root.parent), "--idle-s", str(idle_s)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    # Reap it when it ends (the launching process may live on, e.g. the daemon).
    threading.Thread(target=process.wait, name=f"reap-supervision-{process.pid}", daemon=True).start()
    return process
