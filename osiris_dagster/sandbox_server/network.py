"""Sandbox networking: each sandbox in its own network namespace, reaching the host over a bridge.

Inside an E2B sandbox, ``127.0.0.1`` is the sandbox itself: a job that reaches "localhost:3306"
works on a developer's machine and fails in E2B's cloud. So, when the kernel allows it, every
sandbox gets a network namespace of its own and its commands start inside it
(``nsenter --net=...``, which execs: the pid the SDK sees is the command's). The host's loopback
is then out of reach, as in the cloud, and tests catch a ``127.0.0.1`` assumption.

A namespace alone has no network at all. Each server therefore owns ONE host bridge
(``osiris-br<N>``, ``10.213.N.1/24``); each sandbox gets a veth pair with its end (``eth0``,
``10.213.N.<x>/24``, default route via ``10.213.N.1``) in the namespace and the host end on the
bridge. ``N`` is claimed by creating the bridge (``ip link add`` fails if the name exists), so two
servers side by side get different /24s without coordinating. What a sandbox reaches at the
bridge address is what the server forwards there (``port_relay``, e.g. 3306 and 5432) plus any
host service that listens on all addresses; there is no NAT, hence no internet (E2B sandboxes
have it - jobs here do not need it).

Modes: ``isolated`` (refuse to start without it), ``shared`` (the host's network, as before),
``auto`` (the default: isolated when a probe namespace can be made - root, ``ip``, ``nsenter`` -
else shared, logged once with the reason). Everything is named with the owning server's pid
(``osiris-<pid>-<sandbox id>``, bridge alias ``osiris-dagster pid=<pid>``): namespaces and bridges
left by a ``kill -9``ed server are found by their dead owner and removed when the next server
starts (``remove_stale``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Literal

from .port_relay import PortRelay

log = logging.getLogger(__name__)

NetworkMode = Literal["auto", "isolated", "shared"]
NETWORK_MODES: tuple[NetworkMode, ...] = ("auto", "isolated", "shared")

NETNS_DIR = Path("/run/netns")
_PREFIX = "osiris-"
_BRIDGE_PREFIX = "osiris-br"
_BRIDGE_ALIAS = "osiris-dagster pid="
_SUBNET = "10.213.{n}"
_NETNS_NAME = re.compile(r"^osiris-(\d+)-")
_MAX_BRIDGES = 256


class NetworkIsolationUnavailable(RuntimeError):
    """The host cannot give sandboxes their own network namespace (the message says why)."""


def isolation_unavailable_reason() -> str | None:
    """Why sandboxes cannot be isolated here, or ``None`` when they can (a probe namespace is made)."""
    missing = [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (iproute2, util-linux)"
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_SYS_ADMIN)"
    probe = f"{_PREFIX}{os.getpid()}-probe-{threading.get_ident()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"ip netns add failed: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return None


def resolve_mode(mode: str) -> bool:
    """True when sandboxes get their own namespace; raises for ``isolated`` that cannot be had."""
    if mode not in NETWORK_MODES:
        raise ValueError(f"unknown network mode {mode!r} (choose {', '.join(NETWORK_MODES)})")
    if mode == "shared":
        return False
    reason = isolation_unavailable_reason()
    if reason is None:
        return True
    if mode == "isolated":
        raise NetworkIsolationUnavailable(f"network mode 'isolated' is not available: {reason}")
    log.warning("local sandbox server: sandboxes share the host's network (%s)", reason)
    return False


class HostBridge:
    """The server's bridge, its address pool and its port relays; removed by ``close``."""

    def __init__(self, forward_ports: list[int]) -> None:
        remove_stale()
        self.name, self.index = _claim_bridge()
        self.address = f"{_SUBNET.format(n=self.index)}.1"
        self._lock = threading.Lock()
        self._free = list(range(2, 255))
        self._relays: list[PortRelay] = []
        try:
            _ip("addr", "add", f"{self.address}/24", "dev", self.name)
            _ip("link", "set", self.name, "up")
            for port in forward_ports:
                self.forward(port)
        except BaseException:
            self.close()
            raise

    def forward(self, port: int) -> None:
        """Relay ``<bridge address>:port`` to the host's ``127.0.0.1:port`` (no-op when already)."""
        with self._lock:
            if any(relay.port == port for relay in self._relays):
                return
            self._relays.append(PortRelay(self.address, port))

    def lease(self) -> int:
        with self._lock:
            if not self._free:
                raise NetworkIsolationUnavailable(f"bridge {self.name} has no free address (253 sandboxes)")
            return self._free.pop(0)

    def release(self, host_part: int) -> None:
        with self._lock:
            self._free.append(host_part)

    def close(self) -> None:
        with self._lock:
            relays, self._relays = self._relays, []
        for relay in relays:
            relay.close()
        subprocess.run(["ip", "link", "delete", self.name], capture_output=True, check=False)


class SandboxNetwork:
    """One sandbox's namespace and veth pair: created with the sandbox, deleted after its processes."""

    def __init__(self, sandbox_id: str, bridge: HostBridge) -> None:
        self.name = f"{_PREFIX}{os.getpid()}-{sandbox_id}"
        self.path = NETNS_DIR / self.name
        self._bridge = bridge
        self._host_part = bridge.lease()
        self.address = f"{_SUBNET.format(n=bridge.index)}.{self._host_part}"
        # Interface names are at most 15 bytes: bridge index and host part identify the pair.
        veth = f"osv{bridge.index}x{self._host_part}"
        try:
            _ip("netns", "add", self.name)
            self.inode = os.stat(self.path).st_ino
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
            _ip("link", "set", veth, "master", bridge.name, "up")
            _ip_batch(
                self.name,
                [
                    "link set lo up",
                    f"addr add {self.address}/24 dev eth0",
                    "link set eth0 up",
                    f"route add default via {bridge.address}",
                ],
            )
        except BaseException:
            self.delete()
            raise

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` inside the namespace (same pid: nsenter execs)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def delete(self) -> None:
        # Deleting the namespace destroys eth0 and with it the host end of the pair.
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)
        self._bridge.release(self._host_part)


def remove_stale() -> list[str]:
    """Remove namespaces and bridges whose owning server is dead (kill -9); returns their names.

    Processes still living in a stale namespace (orphans of the dead server's sandboxes) are
    killed first: they would keep the namespace alive and keep running a job nobody watches.
    """
    from .process_tree import kill_processes_in_netns

    removed = []
    if NETNS_DIR.is_dir():
        for entry in NETNS_DIR.iterdir():
            match = _NETNS_NAME.match(entry.name)
            if match is None or _alive(int(match.group(1))):
                continue
            with contextlib.suppress(OSError):
                kill_processes_in_netns(os.stat(entry).st_ino)
            subprocess.run(["ip", "netns", "delete", entry.name], capture_output=True, check=False)
            removed.append(entry.name)
    for name, owner in _bridges():
        # No alias yet: another server is between creating it and naming itself; leave it.
        if owner is not None and not _alive(owner):
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
            removed.append(name)
    return removed


def _bridges() -> list[tuple[str, int | None]]:
    """Our bridges on this host with their owner pid (None when the alias was never written)."""
    found = []
    for device in Path("/sys/class/net").iterdir():
        if not device.name.startswith(_BRIDGE_PREFIX):
            continue
        with contextlib.suppress(OSError):
            alias = (device / "ifalias").read_text().strip()
            owner = int(alias[len(_BRIDGE_ALIAS) :]) if alias.startswith(_BRIDGE_ALIAS) else None
            found.append((device.name, owner))
    return found


def _claim_bridge() -> tuple[str, int]:
    for index in range(_MAX_BRIDGES):
        name = f"{_BRIDGE_PREFIX}{index}"
        result = subprocess.run(["ip", "link", "add", name, "type", "bridge"], capture_output=True, check=False)
        if result.returncode == 0:
            # The owner, for ``remove_stale`` after a kill -9 (``ip link add`` ignores ``alias``).
            _ip("link", "set", name, "alias", f"{_BRIDGE_ALIAS}{os.getpid()}")
            return name, index
    raise NetworkIsolationUnavailable(f"no free bridge name {_BRIDGE_PREFIX}0..{_MAX_BRIDGES - 1}")


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetworkIsolationUnavailable(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def _ip_batch(netns: str, commands: list[str]) -> None:
    """Several ``ip`` commands inside ``netns`` in one process (each ``ip`` call costs ~3 ms)."""
    result = subprocess.run(
        ["ip", "-n", netns, "-batch", "-"],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise NetworkIsolationUnavailable(f"ip -n {netns} -batch failed: {result.stderr.strip()}")
