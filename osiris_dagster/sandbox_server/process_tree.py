"""Find and kill every process of a sandbox, including the ones that left its process groups.

An E2B sandbox is a VM: killing it ends every process in it, whatever they did. Here a
sandbox's processes are host processes, and killing the process group of each command
is not enough: a command that starts a daemon (``setsid``, ``cmd &`` from a shell that
then exits, a double fork) leaves processes in a group nobody tracks any more, and
they were seen to survive as orphans (PPID 1) and keep executing a run after their
sandbox was killed (the warm pool's worker did exactly that).

So membership is decided by what a process cannot shed by accident, read from /proc:

* its environment says ``HOME=<sandbox root>/home/user`` (the server sets it for every
  command and children inherit it), or
* its working directory is inside the sandbox root, or
* it is a descendant of one of the sandbox's commands (``PPid`` chain), or
* with network isolation on, it lives in the sandbox's network namespace (which no process
  leaves without privileges).

A process that deliberately rewrites its environment, leaves the root and daemonizes
escapes; that is acceptable for a development server that is not a security boundary
(docs/local-sandbox.md). There is no cgroup here (cgroup v1 without a writable
hierarchy for us), which is what envd itself uses.

The sweep repeats until it finds nothing (a process may fork while its siblings die);
one sweep reads ~3 small files per process: ~5 ms for 300 processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

_MAX_SWEEPS = 20


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _parent_pid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rpartition(b")")[2].split()
    return int(fields[1]) if len(fields) > 1 else None


def sandbox_pids(root: Path, home: Path, roots: Iterable[int] = (), netns_inode: int | None = None) -> set[int]:
    """Pids of live processes that belong to the sandbox (see the module docstring)."""
    home_marker = b"HOME=" + os.fsencode(home)
    root_str = str(root)
    me = os.getpid()
    parents: dict[int, int] = {}
    members: set[int] = set(roots)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        parent = _parent_pid(pid)
        if parent is None:
            continue
        parents[pid] = parent
        if netns_inode is not None and _netns_inode(pid) == netns_inode:
            members.add(pid)
            continue
        environ = _read(f"/proc/{pid}/environ")
        if environ is not None and home_marker in environ.split(b"\0"):
            members.add(pid)
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd == root_str or cwd.startswith(root_str + "/"):
                members.add(pid)
    # Descendants of members (a child that changed HOME and cwd is still a child).
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if pid not in members and parent in members:
                members.add(pid)
                changed = True
    return {pid for pid in members if pid in parents and pid != me}


def kill_sandbox_processes(root: Path, home: Path, roots: Iterable[int] = (), netns_inode: int | None = None) -> int:
    """SIGKILL every process of the sandbox until none is left; returns how many were killed."""
    roots = list(roots)
    return _kill_until_none_left(lambda: sandbox_pids(root, home, roots, netns_inode))


def kill_processes_in_netns(netns_inode: int) -> int:
    """SIGKILL every process living in the network namespace ``netns_inode``; returns how many."""
    return _kill_until_none_left(
        lambda: {int(e) for e in os.listdir("/proc") if e.isdigit() and _netns_inode(int(e)) == netns_inode}
    )


def _kill_until_none_left(find_pids: Callable[[], set[int]]) -> int:
    """SIGKILL what ``find_pids`` finds, sweeping again (forks race the kill) until nothing is left."""
    killed: set[int] = set()
    for _ in range(_MAX_SWEEPS):
        pids = {pid for pid in find_pids() - killed if _is_alive(pid)}
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed |= pids
        time.sleep(0.01)
    return len(killed)


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _is_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (a zombie waits for its parent's wait())."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return False
    fields = stat.rpartition(b")")[2].split()
    return bool(fields) and fields[0] != b"Z"
