"""Opt-in network isolation: each sandbox's processes in their own network namespace.

Inside an E2B sandbox, ``127.0.0.1`` is the sandbox itself: a job that reaches "localhost:3306"
works on a developer's machine and with the local server (which shares the host's network) and
fails in E2B's cloud. With ``isolate_network`` every sandbox gets a network namespace of its own
(``ip netns add``, loopback up) and its commands start inside it (``nsenter --net=...``, which
execs: the pid the SDK sees is the command's), so the host's loopback services are out of reach,
as in the cloud. The namespace's inode also marks the sandbox's processes for the kill sweep.

Why opt-in, not "on when the kernel allows it": it needs root (or CAP_SYS_ADMIN) and ``ip`` /
``nsenter``, and an isolated sandbox has **no** network at all - not even the internet an E2B
sandbox has. The test databases here listen on 127.0.0.1 only, so a sandbox reaching them
would need a veth pair plus a forwarder on the host side and the launcher passing that address;
that is not built. Remote-run tests therefore use the shared network, and the isolation has its
own tests (a host loopback port unreachable, sandbox loopback usable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")


class NetworkIsolationUnavailable(RuntimeError):
    """The host cannot give sandboxes their own network namespace (the message says why)."""


def check_available() -> None:
    missing = [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        raise NetworkIsolationUnavailable(f"isolate_network needs {' and '.join(missing)} (iproute2, util-linux)")
    if os.geteuid() != 0:
        raise NetworkIsolationUnavailable("isolate_network needs root (network namespaces need CAP_SYS_ADMIN)")


class SandboxNetwork:
    """One sandbox's network namespace: created with the sandbox, deleted after its processes."""

    def __init__(self, sandbox_id: str) -> None:
        self.name = f"osiris-{sandbox_id}"
        self.path = NETNS_DIR / self.name
        _run(["ip", "netns", "add", self.name])
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        self.inode = os.stat(self.path).st_ino

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` inside the namespace (same pid: nsenter execs)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetworkIsolationUnavailable(f"{' '.join(argv)} failed: {result.stderr.strip()}")
