"""The fault-injection switch: dropped command streams and file transfers, seen by the real SDK.

What a real network reset looks like to e2b 2.63 with the sandbox still alive: a
command stream raises ``connectrpc.errors.ConnectError`` (code ``unavailable``, caused by
``pyqwest.ReadError``) after the SDK's own health probe found the sandbox running - NOT
``SandboxNotRunningException``; a file transfer raises ``httpx.TransportError``. The
process is untouched and ``commands.connect(pid)`` re-attaches. The expected values
come from the sandbox itself (a command's own marker file and sha256sum), not from the
server's bookkeeping.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from connectrpc.errors import ConnectError
from e2b import Sandbox, SandboxNotRunningException
from pyqwest import ReadError

from osiris_dagster.sandbox_server import LocalSandboxServer
from osiris_dagster.sandbox_server.faults import FaultPlan, FaultSpecError

pytestmark = pytest.mark.sandbox

# Prints 1..N, one number per line every 50 ms, then leaves a marker file: proof that
# the process ran to its end whatever happened to the streams watching it.
_COUNTER = "for i in $(seq 1 {n}); do echo $i; sleep 0.05; done; echo done > ~/finished"


@pytest.fixture
def faulty() -> Iterator[LocalSandboxServer]:
    """A server of its own (faults are per server); switched on per test with set_faults."""
    with LocalSandboxServer(port=0, faults="") as srv:
        yield srv


def _numbers(text: str) -> list[int]:
    return [int(line) for line in text.split()]


def test_dropped_start_stream_leaves_the_process_running_and_connect_reattaches(
    faulty: LocalSandboxServer,
) -> None:
    sbx = Sandbox.create(timeout=60, **faulty.sdk_kwargs())
    try:
        faulty.set_faults("drop=streams,every=1,max=1,cut=0.3")
        handle = sbx.commands.run(_COUNTER.format(n=40), background=True, timeout=0)
        seen_before: list[str] = []
        with pytest.raises(ConnectError) as dropped:
            handle.wait(on_stdout=seen_before.append)
        assert not isinstance(dropped.value, SandboxNotRunningException)
        assert isinstance(dropped.value.__cause__, ReadError)  # the transport's own error
        assert "connection reset" in str(dropped.value).lower()
        assert [p.pid for p in sbx.commands.list()] == [handle.pid]  # still running

        reattached = sbx.commands.connect(handle.pid)  # max=1: this stream is not cut
        result = reattached.wait()
        assert result.exit_code == 0
        assert sbx.files.read("/home/user/finished") == "done\n"

        before, after = _numbers("".join(seen_before)), _numbers(result.stdout)
        assert before == list(range(1, len(before) + 1))  # in order from the start
        assert after and after[-1] == 40 and after == list(range(after[0], 41))
        assert not set(before) & set(after)  # envd does not replay: nothing twice
        assert [d.kind for d in faulty.faults.drops] == ["stream"]
    finally:
        sbx.kill()


def test_dropped_connect_stream_can_be_reattached_again(faulty: LocalSandboxServer) -> None:
    sbx = Sandbox.create(timeout=60, **faulty.sdk_kwargs())
    try:
        faulty.set_faults("drop=streams,every=1,max=2,cut=0.2")
        handle = sbx.commands.run(_COUNTER.format(n=30), background=True, timeout=0)
        with pytest.raises(ConnectError):
            handle.wait()
        with pytest.raises(ConnectError):
            sbx.commands.connect(handle.pid).wait()
        result = sbx.commands.connect(handle.pid).wait()  # budget spent: survives
        assert result.exit_code == 0
        assert _numbers(result.stdout)[-1] == 30
        assert [d.detail.split()[0] for d in faulty.faults.drops] == ["Start", "Connect"]
    finally:
        sbx.kill()


def test_short_commands_ending_before_their_cut_do_not_spend_the_budget(faulty: LocalSandboxServer) -> None:
    sbx = Sandbox.create(timeout=60, **faulty.sdk_kwargs())
    try:
        faulty.set_faults("drop=streams,every=1,max=1,cut=5")
        for _ in range(3):
            assert sbx.commands.run("echo quick").stdout == "quick\n"
        assert faulty.faults.drops == []
    finally:
        sbx.kill()


def test_dropped_download_raises_and_a_retry_reads_every_byte(faulty: LocalSandboxServer) -> None:
    sbx = Sandbox.create(timeout=60, **faulty.sdk_kwargs())
    try:
        made = sbx.commands.run("head -c 3000000 /dev/urandom > blob && sha256sum blob")
        expected = made.stdout.split()[0]
        faulty.set_faults("drop=files,every=1,max=1")
        with pytest.raises(httpx.TransportError):
            sbx.files.read("/home/user/blob", format="bytes")
        data = sbx.files.read("/home/user/blob", format="bytes")
        assert hashlib.sha256(data).hexdigest() == expected
        (drop,) = faulty.faults.drops
        assert drop.kind == "download" and "of 3000000 bytes" in drop.detail
    finally:
        sbx.kill()


def test_dropped_upload_writes_nothing_and_a_retry_lands_whole(faulty: LocalSandboxServer) -> None:
    sbx = Sandbox.create(timeout=60, **faulty.sdk_kwargs())
    try:
        payload = os.urandom(2_000_000)
        faulty.set_faults("drop=files,every=1,max=1")
        with pytest.raises(httpx.TransportError):
            sbx.files.write("/home/user/in/payload.bin", payload)
        listing = sbx.commands.run("ls -A ~/in 2>/dev/null | wc -l").stdout.strip()
        assert listing == "0"  # not even a partial temp file
        sbx.files.write("/home/user/in/payload.bin", payload)
        digest = sbx.commands.run("sha256sum ~/in/payload.bin").stdout.split()[0]
        assert digest == hashlib.sha256(payload).hexdigest()
    finally:
        sbx.kill()


def test_after_delays_and_max_bounds_the_drops(faulty: LocalSandboxServer) -> None:
    faulty.set_faults("drop=files,every=1,max=2,after=1.5")
    sbx = Sandbox.create(timeout=60, **faulty.sdk_kwargs())
    try:
        sbx.files.write("/home/user/x", "early")  # sandbox younger than 1.5 s: untouched
        assert sbx.files.read("/home/user/x") == "early"
        time.sleep(max(0.0, 1.6 - (time.time() - _started_at(sbx))))
        failures = 0
        for _ in range(4):
            try:
                sbx.files.read("/home/user/x")
            except httpx.TransportError:
                failures += 1
        assert failures == 2
        assert len(faulty.faults.drops) == 2
    finally:
        sbx.kill()


def _started_at(sbx: Sandbox) -> float:
    return sbx.get_info().started_at.timestamp()


def _failure_pattern(spec: str) -> list[bool]:
    with LocalSandboxServer(port=0, faults="") as srv:
        sbx = Sandbox.create(timeout=60, **srv.sdk_kwargs())
        sbx.files.write("/home/user/x", "x")
        srv.set_faults(spec)
        pattern = []
        for _ in range(12):
            try:
                sbx.files.read("/home/user/x")
                pattern.append(False)
            except httpx.TransportError:
                pattern.append(True)
        sbx.kill()
    return pattern


def test_the_same_seed_drops_the_same_transfers() -> None:
    first = _failure_pattern("drop=files,rate=0.5,seed=7,max=12")
    assert first == _failure_pattern("drop=files,rate=0.5,seed=7,max=12")
    assert 0 < sum(first) < 12
    assert first != _failure_pattern("drop=files,rate=0.5,seed=8,max=12")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("every=x", "every"),
        ("rate=2", "rate"),
        ("every=2,rate=0.5", "exactly one"),
        ("drop=pipes,every=1", "drop"),
        ("every=1,max=0", "max"),
        ("often=1", "often"),
    ],
)
def test_bad_specs_name_the_field(spec: str, field: str) -> None:
    with pytest.raises(FaultSpecError, match=field):
        FaultPlan.parse(spec)


def test_cli_refuses_a_bad_spec_with_exit_code_2() -> None:
    cli = [sys.executable, "-m", "osiris_dagster.cli", "sandbox", "serve", "--port", "0"]
    bad = subprocess.run([*cli, "--faults", "every=x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "--faults" in bad.stderr and "every: expected an integer" in bad.stderr
    env = {**os.environ, "OSIRIS_SANDBOX_FAULTS": "rate=7"}
    bad_env = subprocess.run(cli, capture_output=True, text=True, timeout=60, env=env)
    assert bad_env.returncode == 2 and "rate: must be between 0 and 1" in bad_env.stderr


def test_cli_reads_the_spec_from_the_environment() -> None:
    env = {**os.environ, "OSIRIS_SANDBOX_FAULTS": "every=4,drop=streams,seed=3"}
    cli = [sys.executable, "-m", "osiris_dagster.cli", "sandbox", "serve", "--port", "0"]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(3)]  # listening, network, faults
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert any("fault injection on: drop=streams,every=4" in line and "seed=3" in line for line in lines)


def test_the_printed_instructions_let_a_plain_sdk_script_run_a_command(tmp_path: Path) -> None:
    """`sandbox serve` as a user starts it (a --base-dir that does not exist yet), then a script of
    the user's own with the real e2b SDK, set up only from what `serve` printed."""
    base = tmp_path / "not" / "yet"
    cli = [sys.executable, "-m", "osiris_dagster.cli", "sandbox", "serve", "--port", "0", "--base-dir", str(base)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        exports = dict(proc.stdout.readline().removeprefix("export ").strip().split("=", 1) for _ in range(4))
        hint = next(line for line in iter(proc.stderr.readline, "") if "e2b SDK used directly" in line)
        proxy = hint.rsplit("HTTPS_PROXY=", 1)[1].strip()
        script = (
            "from e2b import Sandbox\ns = Sandbox.create()\nprint(s.commands.run('echo from-sandbox').stdout)\ns.kill()"
        )
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        without_proxy = subprocess.run(
            [sys.executable, "-c", script], env={**env, **exports}, capture_output=True, text=True, timeout=120
        )
        assert without_proxy.returncode != 0  # why the hint is printed
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**env, **exports, "HTTPS_PROXY": proxy},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "from-sandbox"
    assert base.is_dir()
