"""`osiris-dagster ui`: `dagster dev` in a session of its own, stopped whole on SIGINT / SIGTERM.

`dagster dev` is four or more processes (itself, the webserver, the daemon, a code server and
its gRPC server, plus one run worker per local run). Left to itself it did not exit within 45 s
of a SIGTERM; measured here on a loaded 2-core machine (load ~10): 12 s for `dagster dev` to
return after a SIGTERM to it alone and 16 s until its last child was gone; 20 s when every process
of the group got SIGINT at once (what a terminal's Ctrl-C does), because each piece then shuts
down on its own schedule. So the signal goes to `dagster dev` only (its orderly path: it tells
the webserver and the daemon through their shutdown pipes), and whatever is still alive
`GRACE_SECONDS` later is killed (4 s: with the kill and the exit, ~6 s on that loaded machine).

"Whatever is still alive" is every process of the session `dagster dev` was started in
(`start_new_session`), read from /proc: Dagster starts its children in the parent's session and
group on Linux, and a process orphaned by a killed parent (re-parented to init) keeps its
session, so the session finds what a walk of the parent tree would miss. A process that calls
`setsid()` leaves it on purpose — the E2B launcher's supervision service and the warm pool's filler
do, because they must outlive the process that started them and finish their runs (killing one
would strand its sandbox) — and is deliberately left alone.

If `osiris-dagster ui` itself is killed outright (SIGKILL: no handler runs), `dagster dev` gets
SIGINT from the kernel (`PR_SET_PDEATHSIG`, Linux) and takes its own orderly, slower way down, so
even then nothing is left running.

Not here: anything about what the UI shows; this module only owns the processes' lifetime.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

GRACE_SECONDS = 4.0
"""How long `dagster dev` gets to stop by itself before its session is killed (exit within 10 s)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_POLL_SECONDS = 0.1
_KILL_SWEEPS = 20
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def session_members(session_id: int) -> set[int]:
    """Live (non-zombie) processes of a session, from /proc/<pid>/stat (fields: state, ..., session)."""
    members: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rpartition(b")")[2].split()
        except OSError:
            continue  # exited meanwhile
        # after the ")" of the command name: state ppid pgrp session ...
        if len(fields) > 3 and fields[0] != b"Z" and int(fields[3]) == session_id:
            members.add(int(entry.name))
    return members


def kill_session(session_id: int) -> None:
    """SIGKILL every process of the session until none is left (a dying parent may have just forked)."""
    for _ in range(_KILL_SWEEPS):
        members = session_members(session_id)
        if not members:
            return
        for pid in members:
            _signal(pid, signal.SIGKILL)
        time.sleep(_POLL_SECONDS)


def serve_ui(command: Sequence[str], *, env: Mapping[str, str], cwd: Path, grace: float = GRACE_SECONDS) -> int:
    """Run `command` (dagster dev) until it exits or this process is asked to stop; return the exit code.

    Stopping: the first SIGINT/SIGTERM/SIGHUP is passed on to `dagster dev` as SIGINT; after `grace`
    seconds, or at a second signal, the whole session is killed. Exit code 0 after a requested
    stop, else `dagster dev`'s own.
    """
    stop_requested: list[float] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(time.monotonic())

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    try:
        parent = os.getpid()
        dev = subprocess.Popen(
            list(command), env=dict(env), cwd=cwd, start_new_session=True, preexec_fn=lambda: _stop_with(parent)
        )
        session = dev.pid
        forwarded = False
        try:
            while dev.poll() is None:
                if stop_requested and not forwarded:
                    _signal(dev.pid, signal.SIGINT)
                    forwarded = True
                if stop_requested and (len(stop_requested) > 1 or time.monotonic() - stop_requested[0] > grace):
                    break
                time.sleep(_POLL_SECONDS)
            # dagster dev returned (or is out of time): its children get what is left of the grace.
            while stop_requested and session_members(session) and time.monotonic() - stop_requested[0] < grace:
                if len(stop_requested) > 1:
                    break
                time.sleep(_POLL_SECONDS)
        finally:
            kill_session(session)
            dev.wait()
        return 0 if stop_requested else dev.returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_with(parent: int) -> None:
    """In the child, before exec: SIGINT when the parent dies, however it dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGINT)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
