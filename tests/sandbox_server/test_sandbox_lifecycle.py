"""Where the launcher relies on E2B's sandbox lifecycle, the local server behaves the same.

Killing a sandbox ends every process in it (a VM is gone), listing pages like E2B's API
(``limit``, ``x-next-token``) and filters by metadata and state. Process liveness is read
from /proc, not from the server's bookkeeping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState

from osiris_dagster.sandbox_server import LocalSandboxServer

pytestmark = pytest.mark.sandbox

# Three ways out of a command's process group: setsid, a daemon whose shell exits at
# once (orphaned, PPID 1) and one that also leaves the sandbox's directory.
_ESCAPERS = (
    "setsid sleep 300 & echo $!; "
    "bash -c 'sleep 300 & echo $!' ; "
    "(cd / && setsid bash -c 'exec sleep 301' & echo $!) ; sleep 0.2"
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False


def _wait_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


@pytest.fixture
def own_server() -> Iterator[LocalSandboxServer]:
    with LocalSandboxServer(port=0, faults="") as srv:
        yield srv


def test_killing_a_sandbox_kills_processes_that_left_its_process_groups(server: LocalSandboxServer) -> None:
    sbx = Sandbox.create(timeout=60, **server.sdk_kwargs())
    pids = [int(p) for p in sbx.commands.run(_ESCAPERS).stdout.split()]
    assert len(pids) == 3 and all(_alive(pid) for pid in pids)
    assert sbx.kill() is True
    assert _wait_dead(pids) == []


def test_stopping_the_server_kills_every_process_of_every_sandbox() -> None:
    pids: list[int] = []
    with LocalSandboxServer(port=0, faults="") as srv:
        for _ in range(2):
            sbx = Sandbox.create(timeout=60, **srv.sdk_kwargs())
            sbx.commands.run("sleep 300", background=True, timeout=0)
            pids += [int(p) for p in sbx.commands.run(_ESCAPERS).stdout.split()]
        assert all(_alive(pid) for pid in pids)
    assert _wait_dead(pids) == []


def test_expiry_kills_processes_that_left_its_process_groups(own_server: LocalSandboxServer) -> None:
    sbx = Sandbox.create(timeout=3, **own_server.sdk_kwargs())
    pids = [int(p) for p in sbx.commands.run(_ESCAPERS).stdout.split()]
    assert _wait_dead(pids, timeout=8) == []
    assert not sbx.is_running()


def test_list_pages_with_limit_and_next_token_without_repeats(own_server: LocalSandboxServer) -> None:
    tag = uuid.uuid4().hex
    sdk = own_server.sdk_kwargs()
    created = [Sandbox.create(timeout=60, metadata={"suite": tag}, **sdk) for _ in range(5)]
    Sandbox.create(timeout=60, metadata={"suite": "other"}, **sdk)
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), limit=2, **sdk)
        pages = []
        while paginator.has_next:
            pages.append([s.sandbox_id for s in paginator.next_items()])
            if len(pages) == 1:
                created[0].kill()  # killed between pages: must not shift the next page
        assert [len(p) for p in pages] == [2, 2]
        seen = [sid for page in pages for sid in page]
        assert seen == [s.sandbox_id for s in reversed(created[1:])]  # newest first, as E2B lists
    finally:
        for sbx in created:
            sbx.kill()


def test_list_filters_by_state(own_server: LocalSandboxServer) -> None:
    sdk = own_server.sdk_kwargs()
    sbx = Sandbox.create(timeout=60, metadata={"k": "v"}, **sdk)
    try:
        running = Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING]), **sdk).next_items()
        paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED]), **sdk).next_items()
        assert [s.sandbox_id for s in running] == [sbx.sandbox_id]
        assert paused == []
    finally:
        sbx.kill()
