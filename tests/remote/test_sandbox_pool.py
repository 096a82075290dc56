"""The warm sandbox pool: each pooled sandbox serves exactly one run; idle ones expire; claims are exclusive."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from e2b import Sandbox, SandboxQuery

from osiris_dagster.remote.bundle import SANDBOX_DIR, code_hash
from osiris_dagster.remote.run_files import RunFiles
from osiris_dagster.remote.sandbox_pool import IDLE_MARKER, POOL_METADATA, STATE_DIR, SandboxPool, claim_marker
from osiris_dagster.remote.settings import SandboxSettings
from osiris_dagster.remote.tags import SANDBOX_ID_TAG
from osiris_dagster.session.reader import SessionRecord
from tests.remote.conftest import dagster_launch, instance_for, wait_for_run, write_instance_config

pytestmark = pytest.mark.sandbox


def _pool(server, size: int, idle_ttl_s: int) -> SandboxPool:  # type: ignore[no-untyped-def]
    settings = SandboxSettings(
        backend="local",
        server_url=server.url,
        python=sys.executable,
        pool_size=size,
        pool_idle_ttl_s=idle_ttl_s,
        pool_name=f"test-{uuid.uuid4().hex[:8]}",  # the server is shared by the whole session
    )
    return SandboxPool(settings)


def _states(pool: SandboxPool) -> list[str]:
    return sorted(s.state for s in pool.status())


def _wait_for_states(pool: SandboxPool, expected: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (states := _states(pool)) != expected:
        assert time.monotonic() < deadline, f"pool states {states}, expected {expected}"
        time.sleep(0.5)


def test_five_runs_with_a_pool_of_two_each_get_a_fresh_sandbox(  # type: ignore[no-untyped-def]
    project: Path, remote_home, sandbox_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    pool_config = {"size": 2, "idle_ttl_s": 300, "name": name}
    home, env = remote_home(pool=pool_config)
    write_instance_config(home, sandbox_server, queued=True, pool=pool_config)
    monkeypatch.chdir(project)
    monkeypatch.delenv("OSIRIS_PROJECT_DIR", raising=False)
    filled = subprocess.run(
        [sys.executable, "-m", "osiris_dagster.cli", "e2b", "pool", "fill"],  # the user-facing command
        cwd=project, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert filled.returncode == 0, filled.stdout + filled.stderr
    assert "2 sandbox(es) added" in filled.stdout
    code_at_fill = code_hash.__wrapped__()  # uncached: the checkout may change
    instance = instance_for(env)
    pool = SandboxPool(instance.run_launcher.settings)
    assert _states(pool) == ["idle", "idle"]

    first = dagster_launch(project, env)
    template = instance.get_run_by_id(first)
    run_ids = [first]
    for _ in range(4):
        run = instance.add_run(template.with_status(DagsterRunStatus.QUEUED)._replace(run_id=str(uuid.uuid4())))
        run_ids.append(run.run_id)
    for run_id in run_ids:
        instance.launch_run(run_id, workspace=None)  # type: ignore[arg-type]
    runs = [wait_for_run(instance, run_id, timeout=240) for run_id in run_ids]

    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 5
    sandbox_ids = [run.tags[SANDBOX_ID_TAG] for run in runs]
    assert len(set(sandbox_ids)) == 5, "a sandbox served two runs"
    claimed = 0
    for run in runs:
        session = SessionRecord.read(project / "logs" / f"run_{run.run_id}")
        assert session.status["ok"] and session.status["sandbox_id"] == run.tags[SANDBOX_ID_TAG]
        assert session.event_counts()["step_complete"] == 10
        starts = [e for e in session.events if e["event"] in ("sandbox_claimed", "sandbox_created")]
        assert len(starts) == 1 and starts[0]["sandbox_id"] == run.tags[SANDBOX_ID_TAG]
        if starts[0]["event"] == "sandbox_claimed":
            claimed += 1
            # Warm unless the package changed since the fill (then the run uploads its own code).
            assert starts[0]["pool"] == name and starts[0]["warm"] is (code_at_fill == code_hash.__wrapped__())
    assert claimed >= 2, "the two idle sandboxes were not used"
    # Claimed sandboxes die with their runs; the top-ups bring the pool back to exactly two idle ones.
    _wait_for_states(pool, ["idle", "idle"])
    assert not set(sandbox_ids) & {s.sandbox_id for s in pool.status()}
    assert len(pool.drain()) == 2
    assert _states(pool) == []


def test_an_idle_sandbox_expires_after_its_ttl(sandbox_server) -> None:  # type: ignore[no-untyped-def]
    pool = _pool(sandbox_server, size=1, idle_ttl_s=2)
    (sandbox_id,) = pool.fill()
    assert _states(pool) == ["idle"]
    time.sleep(3.5)
    assert _states(pool) == []
    listed = Sandbox.list(
        query=SandboxQuery(metadata={POOL_METADATA: pool.name}), **pool.settings.sdk_kwargs()
    ).next_items()
    assert sandbox_id not in {info.sandbox_id for info in listed}


def test_two_claimers_racing_for_one_sandbox_exactly_one_wins(sandbox_server) -> None:  # type: ignore[no-untyped-def]
    pool = _pool(sandbox_server, size=1, idle_ttl_s=120)
    (sandbox_id,) = pool.fill()
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def claim(run_id: str) -> None:
        barrier.wait()
        results[run_id] = pool.claim(run_id)

    threads = [threading.Thread(target=claim, args=(run_id,)) for run_id in ("run-a", "run-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run_id for run_id, claimed in results.items() if claimed is not None]
    assert len(winners) == 1
    (winner,) = winners
    sandbox = results[winner].sandbox  # type: ignore[attr-defined]
    assert sandbox.sandbox_id == sandbox_id
    # The marker names the run; the sandbox is no longer offered to anyone.
    assert sandbox.files.exists(claim_marker(winner)) and not sandbox.files.exists(IDLE_MARKER)
    assert [e.name for e in sandbox.files.list(STATE_DIR)] == [f"claimed-{winner}"]
    assert pool.claim("run-c") is None
    assert _states(pool) == [f"claimed by {winner}"]
    assert pool.drain() == []  # claimed sandboxes belong to their runs
    sandbox.kill()


def test_a_pooled_sandbox_whose_warm_worker_is_gone_still_runs_the_run(  # type: ignore[no-untyped-def]
    project: Path, remote_home
) -> None:
    home, env = remote_home(pool={"size": 1, "idle_ttl_s": 300, "name": f"test-{uuid.uuid4().hex[:8]}"})
    instance = instance_for(env)
    pool = SandboxPool(instance.run_launcher.settings)
    (sandbox_id,) = pool.fill()
    sandbox = Sandbox.connect(sandbox_id, timeout=1, **pool.settings.sdk_kwargs())
    sandbox.files.remove(f"{SANDBOX_DIR}/warm.sock")  # the warm worker can no longer be reached

    run = wait_for_run(instance, dagster_launch(project, env))

    assert run.status == DagsterRunStatus.SUCCESS and run.tags[SANDBOX_ID_TAG] == sandbox_id
    assert "no warm worker: starting a cold one" in RunFiles.for_run(home, run.run_id).log.read_text()
    _wait_for_states(pool, ["idle"])  # the top-up's replacement
    assert len(pool.drain()) == 1


def test_only_a_sandbox_filling_for_longer_than_any_fill_counts_as_stale() -> None:
    from osiris_dagster.remote.sandbox_pool import PooledSandbox

    long_ago = time.time() - 3600
    assert PooledSandbox("a", "filling", "", "", long_ago).stale
    assert not PooledSandbox("b", "filling", "", "", time.time()).stale
    assert not PooledSandbox("c", "idle", "", "", long_ago).stale
