"""Sandbox networking: no host loopback (as in E2B's cloud), the host reached at the bridge address.

The control is a TCP listener the test opens on the host's 127.0.0.1: reachable from a sandbox of
a shared-network server, refused from an isolated one, whose own loopback still works and which
reaches the same listener at ``host_address`` once its port is forwarded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox

from osiris_dagster.sandbox_server import LocalSandboxServer

pytestmark = pytest.mark.sandbox

_PY = sys.executable
_CONNECT = (
    f"{_PY} -c \"import socket; socket.create_connection(('{{host}}', {{port}}), 2).sendall(b'hi'); print('reached')\""
)
_OWN_LOOPBACK = (
    f"{_PY} -c \"import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
    "socket.create_connection(s.getsockname(), 2); print('own loopback')\""
)


@pytest.fixture
def host_listener() -> Iterator[socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(5)
        yield listener


@pytest.fixture
def isolated(host_listener: socket.socket) -> Iterator[LocalSandboxServer]:
    port = host_listener.getsockname()[1]
    with LocalSandboxServer(port=0, faults="", network="isolated", forward=[port]) as srv:
        yield srv


def _port(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])


def test_shared_sandbox_reaches_the_hosts_loopback(host_listener: socket.socket) -> None:
    with LocalSandboxServer(port=0, faults="", network="shared") as shared:
        assert shared.host_address == "127.0.0.1"
        sbx = Sandbox.create(timeout=60, **shared.sdk_kwargs())
        try:
            assert sbx.commands.run(_CONNECT.format(host="127.0.0.1", port=_port(host_listener))).stdout == "reached\n"
        finally:
            sbx.kill()


def test_default_server_isolates_sandboxes_when_the_kernel_allows(server: LocalSandboxServer) -> None:
    assert os.geteuid() == 0, "CI runs as root; as non-root 'auto' falls back to shared (tested below)"
    assert server.isolated
    assert server.host_address.startswith("10.213.") and server.host_address.endswith(".1")


def test_isolated_sandbox_reaches_forwarded_ports_at_the_host_address_only(
    isolated: LocalSandboxServer, host_listener: socket.socket
) -> None:
    sbx = Sandbox.create(timeout=60, **isolated.sdk_kwargs())
    try:
        with pytest.raises(CommandExitException) as refused:
            sbx.commands.run(_CONNECT.format(host="127.0.0.1", port=_port(host_listener)))
        assert "ConnectionRefusedError" in refused.value.stderr
        assert sbx.commands.run(_OWN_LOOPBACK).stdout == "own loopback\n"

        out = sbx.commands.run(_CONNECT.format(host=isolated.host_address, port=_port(host_listener))).stdout
        assert out == "reached\n"
        accepted, peer = host_listener.accept()
        with accepted:
            assert accepted.recv(2) == b"hi"
        assert peer[0] == "127.0.0.1"  # relayed: the database sees a local client

        handle = sbx.commands.run("echo $$; sleep 30", background=True, timeout=0)
        time.sleep(0.3)
        assert [p.pid for p in sbx.commands.list()] == [handle.pid]
        # nsenter exec'd into the command: the SDK's pid is the process in the sandbox's namespace
        assert os.stat(f"/proc/{handle.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    finally:
        sbx.kill()


def test_two_servers_side_by_side_get_different_subnets() -> None:
    with (
        LocalSandboxServer(port=0, faults="", network="isolated") as first,
        LocalSandboxServer(port=0, faults="", network="isolated") as second,
    ):
        assert first.host_address != second.host_address
        a = Sandbox.create(timeout=60, **first.sdk_kwargs())
        b = Sandbox.create(timeout=60, **second.sdk_kwargs())
        try:
            route_a = a.commands.run("ip -4 -o addr show eth0").stdout
            route_b = b.commands.run("ip -4 -o addr show eth0").stdout
            assert first.host_address.rsplit(".", 1)[0] + "." in route_a
            assert second.host_address.rsplit(".", 1)[0] + "." in route_b
        finally:
            a.kill()
            b.kill()


def test_killing_an_isolated_sandbox_kills_its_daemons_and_removes_its_namespace(
    isolated: LocalSandboxServer,
) -> None:
    sbx = Sandbox.create(timeout=60, **isolated.sdk_kwargs())
    # A daemon that leaves the sandbox's directory and environment: only the namespace marks it.
    out = sbx.commands.run("cd / && env -i setsid sleep 300 & echo $!").stdout
    pid = int(out.split()[0])
    time.sleep(0.2)
    namespace = Path(f"/run/netns/osiris-{os.getpid()}-{sbx.sandbox_id}")
    assert namespace.exists() and os.path.exists(f"/proc/{pid}")
    sbx.kill()
    _wait_gone(pid)
    assert not namespace.exists()


def test_stopping_the_server_removes_its_bridge_and_namespaces() -> None:
    with LocalSandboxServer(port=0, faults="", network="isolated") as srv:
        sbx = Sandbox.create(timeout=60, **srv.sdk_kwargs())
        bridge = _bridge_of(srv.host_address)
        assert bridge is not None
    assert not Path(f"/run/netns/osiris-{os.getpid()}-{sbx.sandbox_id}").exists()
    assert not Path(f"/sys/class/net/{bridge}").exists()


_DOOMED_SERVER = """
import sys, time
from e2b import Sandbox
from osiris_dagster.sandbox_server import LocalSandboxServer
server = LocalSandboxServer(port=0, faults="", network="isolated").start()
sbx = Sandbox.create(timeout=300, **server.sdk_kwargs())
pid = sbx.commands.run("cd / && env -i setsid sleep 300 > /dev/null 2>&1 & echo $!").stdout.split()[0]
print(server.host_address, sbx.sandbox_id, pid, flush=True)
time.sleep(300)
"""


def test_a_kill_9ed_servers_namespaces_bridge_and_daemons_are_removed_by_the_next_server(tmp_path: Path) -> None:
    doomed = subprocess.Popen([_PY, "-c", _DOOMED_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        address, sandbox_id, daemon = doomed.stdout.readline().split()  # type: ignore[union-attr]
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    namespace = Path(f"/run/netns/osiris-{doomed.pid}-{sandbox_id}")
    bridge = _bridge_of(address)
    assert namespace.exists() and bridge is not None and os.path.exists(f"/proc/{daemon}")

    with LocalSandboxServer(port=0, faults="", network="isolated"):
        assert not namespace.exists()
        _wait_gone(int(daemon))
        # The dead server's bridge is gone (its name may be claimed again, by this server).
        alias = Path(f"/sys/class/net/{bridge}/ifalias")
        assert not alias.exists() or alias.read_text().strip() == f"osiris-dagster pid={os.getpid()}"


def test_auto_falls_back_to_shared_when_isolation_is_impossible(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no `ip`, no `nsenter`
    with LocalSandboxServer(port=0, faults="", network="auto") as srv:
        assert not srv.isolated and srv.host_address == "127.0.0.1"
    assert "sandboxes share the host's network (ip and nsenter not found" in caplog.text


def test_isolated_refuses_to_start_when_it_cannot_isolate() -> None:
    result = subprocess.run(
        [_PY, "-m", "osiris_dagster.sandbox_server.cli", "serve", "--network", "isolated"],
        env={**os.environ, "PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--network" in result.stderr and "ip and nsenter not found" in result.stderr


def _bridge_of(address: str) -> str | None:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if f" {address}/24 " in line:
            return line.split()[1]
    return None


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            if stat.read().rpartition(b")")[2].split()[0] == b"Z":
                return
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")
