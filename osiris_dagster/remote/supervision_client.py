"""What the launcher calls to hand a run to the supervision service (starting the service if need be).

One service per DAGSTER_HOME (`supervision_service`) supervises every remote run of that
instance. `hand_over` sends it one line of JSON on its unix socket and waits for the answer,
which comes only once the run is written to the service's spool and its supervision lock is
held: from then on the run is supervised, or — if the service dies — picked up again by the next
service. If no service answers, this starts one (detached, in its own session, so it outlives a
``dagster job launch``) and retries; two launchers doing so at once start two processes of which
one wins the service lock and the other exits.

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_MODULE = "osiris_dagster.remote.supervision_service"
# How long a launch waits for a service to answer (start-up included) before it fails.
HAND_OVER_TIMEOUT_S = 60.0
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
    timeout_s: float = HAND_OVER_TIMEOUT_S,
) -> int:
    """Give the run in ``run_dir`` to this home's service; return the service's pid.

    ``env`` holds the values of the variables the run needs, read from the launching process's
    environment: they travel in memory over the socket only, never into the spool.
    """
    paths = ServicePaths.for_home(instance_root)
    paths.root.mkdir(parents=True, exist_ok=True)
    message = json.dumps({"run_dir": str(run_dir), "resume": resume, "env": env or {}}).encode() + b"\n"
    deadline = time.monotonic() + timeout_s
    starter: subprocess.Popen[bytes] | None = None
    pause = 0.02
    while True:
        try:
            return int(_exchange(paths.address, message)["pid"])
        except (OSError, ValueError, KeyError) as error:  # no service, or it went away mid-answer
            if time.monotonic() > deadline:
                raise HandOverError(
                    f"the E2B supervision service of {paths.root} did not take the run within {timeout_s:.0f} s "
                    f"({type(error).__name__}: {error}); see {paths.log}"
                ) from error
        if starter is None or starter.poll() is not None:  # none of ours is starting: start one
            starter = start_service(paths, idle_s)
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


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
