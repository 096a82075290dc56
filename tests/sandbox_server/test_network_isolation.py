"""Opt-in network isolation: a sandbox's commands do not reach the host's loopback (as in E2B's cloud).

The control is a TCP listener the test opens on the host's 127.0.0.1: reachable from a sandbox of
a default server, refused from an isolated one, whose own loopback still works.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox

from osiris_dagster.sandbox_server import LocalSandboxServer

pytestmark = pytest.mark.sandbox

_PY = sys.executable
_CONNECT = f"{_PY} -c \"import socket; socket.create_connection(('127.0.0.1', {{port}}), 2); print('reached')\""
_OWN_LOOPBACK = (
    f"{_PY} -c \"import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
    "socket.create_connection(s.getsockname(), 2); print('own loopback')\""
)


@pytest.fixture
def host_listener() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


@pytest.fixture
def isolated() -> Iterator[LocalSandboxServer]:
    with LocalSandboxServer(port=0, faults="", isolate_network=True) as srv:
        yield srv


def test_default_sandbox_shares_the_hosts_loopback(server: LocalSandboxServer, host_listener: int) -> None:
    sbx = Sandbox.create(timeout=60, **server.sdk_kwargs())
    try:
        assert sbx.commands.run(_CONNECT.format(port=host_listener)).stdout == "reached\n"
    finally:
        sbx.kill()


def test_isolated_sandbox_cannot_reach_the_hosts_loopback(isolated: LocalSandboxServer, host_listener: int) -> None:
    sbx = Sandbox.create(timeout=60, **isolated.sdk_kwargs())
    try:
        with pytest.raises(CommandExitException) as refused:
            sbx.commands.run(_CONNECT.format(port=host_listener))
        assert "ConnectionRefusedError" in refused.value.stderr
        assert sbx.commands.run(_OWN_LOOPBACK).stdout == "own loopback\n"
        handle = sbx.commands.run("echo $$; sleep 30", background=True, timeout=0)
        time.sleep(0.3)
        assert [p.pid for p in sbx.commands.list()] == [handle.pid]
        # nsenter exec'd into the command: the SDK's pid is the process in the sandbox's namespace
        assert os.stat(f"/proc/{handle.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    finally:
        sbx.kill()


def test_killing_an_isolated_sandbox_kills_its_daemons_and_removes_its_namespace(
    isolated: LocalSandboxServer,
) -> None:
    sbx = Sandbox.create(timeout=60, **isolated.sdk_kwargs())
    # A daemon that leaves the sandbox's directory and environment: only the namespace marks it.
    out = sbx.commands.run("cd / && env -i setsid sleep 300 & echo $!").stdout
    pid = int(out.split()[0])
    time.sleep(0.2)
    namespace = Path(f"/run/netns/osiris-{sbx.sandbox_id}")
    assert namespace.exists() and os.path.exists(f"/proc/{pid}")
    sbx.kill()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            if stat.read().rpartition(b")")[2].split()[0] == b"Z":
                break
        time.sleep(0.05)
    else:
        assert not os.path.exists(f"/proc/{pid}")
    assert not namespace.exists()
