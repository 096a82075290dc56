"""Contract tests: the real e2b SDK (sync and async) against the local sandbox server.

Each test asserts concrete values (bytes, exit codes, messages) so a drift between
what the pinned SDK expects and what the server does fails loudly.
"""

from __future__ import annotations

import asyncio
import gzip as gzip_module
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2b import (
    AsyncSandbox,
    CommandExitException,
    FileNotFoundException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxNotRunningException,
    SandboxQuery,
    TimeoutException,
)
from e2b.sandbox.filesystem.filesystem import FileType, WriteEntry

from osiris_dagster.sandbox_server import LocalSandboxServer

pytestmark = pytest.mark.sandbox


# -- lifecycle --------------------------------------------------------------------
def test_create_with_envs_and_metadata(sdk: dict[str, str]) -> None:
    tag = uuid.uuid4().hex
    sbx = Sandbox.create(envs={"GREETING": "hello world"}, metadata={"suite": tag}, timeout=60, **sdk)
    try:
        assert sbx.commands.run('echo "$GREETING"').stdout == "hello world\n"
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.metadata == {"suite": tag}
        listed = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), **sdk).next_items()
        assert [s.sandbox_id for s in listed] == [sbx.sandbox_id]
        assert Sandbox.list(query=SandboxQuery(metadata={"suite": "other"}), **sdk).next_items() == []
    finally:
        sbx.kill()
    assert Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), **sdk).next_items() == []


def test_sandbox_ids_are_unique(sdk: dict[str, str]) -> None:
    sandboxes = [Sandbox.create(timeout=30, **sdk) for _ in range(3)]
    try:
        assert len({s.sandbox_id for s in sandboxes}) == 3
    finally:
        for s in sandboxes:
            s.kill()


def test_connect_kill_and_is_running(sdk: dict[str, str]) -> None:
    sbx = Sandbox.create(timeout=60, **sdk)
    sbx.files.write("/home/user/state.txt", "kept")
    again = Sandbox.connect(sbx.sandbox_id, **sdk)
    assert again.sandbox_id == sbx.sandbox_id
    assert again.files.read("/home/user/state.txt") == "kept"
    assert sbx.is_running() is True
    assert sbx.kill() is True
    assert sbx.kill() is False
    assert sbx.is_running() is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id, **sdk)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id, **sdk)
    other = Sandbox.create(timeout=30, **sdk)
    assert Sandbox.kill(other.sandbox_id, **sdk) is True  # the class-level kill
    assert other.is_running() is False


def test_set_timeout_and_expiry_kill_processes(sdk: dict[str, str]) -> None:
    sbx = Sandbox.create(timeout=30, **sdk)
    handle = sbx.commands.run("sleep 60", background=True, timeout=0)
    pid = handle.pid
    os.kill(pid, 0)  # the local sandbox runs real host processes
    sbx.set_timeout(1)
    deadline = time.monotonic() + 5
    while sbx.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sbx.is_running() is False
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert sbx.kill() is False


def test_short_create_timeout_expires(sdk: dict[str, str]) -> None:
    sbx = Sandbox.create(timeout=1, **sdk)
    assert sbx.is_running() is True
    time.sleep(1.3)
    assert sbx.is_running() is False
    with pytest.raises(SandboxException, match="was not found"):
        sbx.commands.run("true")


def test_expiry_during_a_command_raises_sandbox_not_running(sdk: dict[str, str]) -> None:
    sbx = Sandbox.create(timeout=1, **sdk)
    started = time.monotonic()
    # E2B's wording when the VM vanishes under a stream (its own SDK test asserts it too).
    with pytest.raises(SandboxNotRunningException, match="killed or reached its end of life"):
        sbx.commands.run("sleep 10", timeout=0)
    assert time.monotonic() - started < 8  # the expiry ended it, not the command (a margin for a loaded machine)


# -- files ------------------------------------------------------------------------
def test_write_and_read_text(sbx: Sandbox) -> None:
    info = sbx.files.write("/home/user/notes/hello.txt", "grüße\n")
    assert (info.name, info.path, info.type) == ("hello.txt", "/home/user/notes/hello.txt", FileType.FILE)
    assert sbx.files.read("/home/user/notes/hello.txt") == "grüße\n"
    assert sbx.files.read("notes/hello.txt") == "grüße\n"  # relative = home-relative


def test_write_and_read_3mb_random_bytes(sbx: Sandbox) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    sbx.files.write("/home/user/blob.bin", payload)
    assert bytes(sbx.files.read("/home/user/blob.bin", format="bytes")) == payload
    streamed = b"".join(sbx.files.read("/home/user/blob.bin", format="stream"))
    assert streamed == payload
    assert sbx.files.get_info("/home/user/blob.bin").size == len(payload)
    assert bytes(sbx.files.read("/home/user/blob.bin", format="bytes", gzip=True)) == payload


def test_octet_stream_and_gzip_uploads(sbx: Sandbox) -> None:
    payload = os.urandom(200_000)
    sbx.files.write("/home/user/gz.bin", payload, gzip=True)
    assert bytes(sbx.files.read("/home/user/gz.bin", format="bytes")) == payload
    sbx.files.write("/home/user/iter.bin", iter([b"ab", b"cd", b"ef"]))
    assert sbx.files.read("/home/user/iter.bin") == "abcdef"
    assert gzip_module.decompress(gzip_module.compress(payload)) == payload


def test_write_files_batch(sbx: Sandbox) -> None:
    result = sbx.files.write_files(
        [
            WriteEntry(path="/home/user/batch/a.txt", data="A"),
            WriteEntry(path="/home/user/batch/sub/b.bin", data=b"\x00\x01\x02"),
            WriteEntry(path="/tmp/c.txt", data="C"),
        ]
    )
    assert [w.path for w in result] == ["/home/user/batch/a.txt", "/home/user/batch/sub/b.bin", "/tmp/c.txt"]
    assert sbx.files.read("/home/user/batch/a.txt") == "A"
    assert bytes(sbx.files.read("/home/user/batch/sub/b.bin", format="bytes")) == b"\x00\x01\x02"
    assert sbx.files.read("/tmp/c.txt") == "C"


def test_list_make_dir_remove_rename_exists(sbx: Sandbox) -> None:
    assert sbx.files.make_dir("/home/user/d/e") is True
    assert sbx.files.make_dir("/home/user/d/e") is False
    sbx.files.write("/home/user/d/f.txt", "12345")
    entries = {e.name: e for e in sbx.files.list("/home/user/d")}
    assert set(entries) == {"e", "f.txt"}
    assert entries["e"].type == FileType.DIR
    assert (entries["f.txt"].type, entries["f.txt"].size, entries["f.txt"].path) == (
        FileType.FILE,
        5,
        "/home/user/d/f.txt",
    )
    deep = {e.path for e in sbx.files.list("/home/user", depth=2)}
    assert {"/home/user/d", "/home/user/d/e", "/home/user/d/f.txt"} <= deep
    renamed = sbx.files.rename("/home/user/d/f.txt", "/home/user/d/e/g.txt")
    assert (renamed.name, renamed.path) == ("g.txt", "/home/user/d/e/g.txt")
    assert sbx.files.exists("/home/user/d/f.txt") is False
    assert sbx.files.exists("/home/user/d/e/g.txt") is True
    assert sbx.files.read("/home/user/d/e/g.txt") == "12345"
    sbx.files.remove("/home/user/d")
    assert sbx.files.exists("/home/user/d") is False
    sbx.files.remove("/home/user/d")  # E2B's envd: removing what is not there is no error
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/home/user/d/e/g.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.list("/home/user/nope")
    with pytest.raises(FileNotFoundException):
        sbx.files.rename("/home/user/nope", "/home/user/nope2")


def test_file_api_and_commands_agree_on_paths(sbx: Sandbox) -> None:
    sbx.files.write("/home/user/job/input.txt", "from-api")
    assert sbx.commands.run("cat job/input.txt && cat ~/job/input.txt").stdout == "from-api" * 2
    assert sbx.commands.run("cat input.txt", cwd="/home/user/job").stdout == "from-api"
    sbx.commands.run("mkdir -p out && echo from-cmd > out/result.txt", cwd="/home/user/job")
    assert sbx.files.read("/home/user/job/out/result.txt") == "from-cmd\n"


# -- commands -----------------------------------------------------------------------
def test_run_streams_large_output_in_chunks(sbx: Sandbox) -> None:
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    result = sbx.commands.run(
        "head -c 200000 /dev/zero | tr '\\0' 'a'; printf 'e%.0s' $(seq 1 40000) >&2",
        on_stdout=out_chunks.append,
        on_stderr=err_chunks.append,
    )
    assert result.exit_code == 0
    assert result.stdout == "a" * 200_000
    assert result.stderr == "e" * 40_000
    assert "".join(out_chunks) == result.stdout
    assert "".join(err_chunks) == result.stderr
    assert len(out_chunks) > 1  # chunked delivery, not one blob
    assert max(len(c) for c in out_chunks) <= 32 * 1024


def test_non_zero_exit_raises_command_exit_exception(sbx: Sandbox) -> None:
    with pytest.raises(CommandExitException) as excinfo:
        sbx.commands.run("echo partial; echo 'it broke' >&2; exit 3")
    assert excinfo.value.exit_code == 3
    assert excinfo.value.stderr == "it broke\n"
    assert excinfo.value.stdout == "partial\n"


def test_command_timeout_kills_the_process(sbx: Sandbox) -> None:
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 1.5; touch killed-too-late", timeout=0.5)
    time.sleep(1.5)  # past the command's own end: had it lived on, the file would be there
    assert sbx.files.exists("/home/user/killed-too-late") is False
    assert sbx.commands.list() == []


def test_timeout_zero_outlives_a_small_timeout(sbx: Sandbox) -> None:
    # Same command the previous test killed at 0.5 s: with timeout=0 it completes.
    result = sbx.commands.run("sleep 1.5; touch survived; echo done", timeout=0)
    assert result.stdout == "done\n"
    assert sbx.files.exists("/home/user/survived") is True


def test_background_wait_kill_and_list(sbx: Sandbox) -> None:
    quick = sbx.commands.run("echo hi; sleep 0.2; echo bye", background=True)
    assert quick.wait().stdout == "hi\nbye\n"

    handle = sbx.commands.run("sleep 30", background=True, timeout=0)
    listed = sbx.commands.list()
    assert [(p.pid, p.cmd, p.args) for p in listed] == [(handle.pid, "/bin/bash", ["-l", "-c", "sleep 30"])]
    assert handle.kill() is True
    with pytest.raises(CommandExitException) as excinfo:
        handle.wait()
    assert excinfo.value.exit_code == -1
    assert sbx.commands.list() == []
    assert sbx.commands.kill(handle.pid) is False


def test_disconnect_does_not_kill_and_connect_reattaches(sbx: Sandbox) -> None:
    handle = sbx.commands.run("sleep 0.6; echo finished", background=True, timeout=0)
    handle.disconnect()
    reattached = sbx.commands.connect(handle.pid)
    result = reattached.wait()
    assert result.exit_code == 0
    assert result.stdout == "finished\n"


def test_stdin_send_and_close(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(handle.pid, "line one\n")
    handle.send_stdin(b"line two\n")
    handle.close_stdin()
    assert handle.wait().stdout == "line one\nline two\n"


def test_env_isolation_from_host(sdk: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSIRIS_TEST_SECRET", "do-not-leak")
    sbx = Sandbox.create(envs={"FROM_CREATE": "1"}, timeout=60, **sdk)
    try:
        out = sbx.commands.run("env", envs={"FROM_CMD": "2"}).stdout
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert "OSIRIS_TEST_SECRET" not in env
        assert "do-not-leak" not in out
        assert (env["FROM_CREATE"], env["FROM_CMD"], env["USER"], env["LOGNAME"]) == (
            "1",
            "2",
            "user",
            "user",
        )
        assert env["HOME"].endswith("/home/user")
        bash_added = {"PWD", "SHLVL", "_", "OLDPWD"}
        assert set(env) - bash_added == {"PATH", "HOME", "USER", "LOGNAME", "FROM_CREATE", "FROM_CMD"}
        assert "/usr/bin" in env["PATH"].split(":")
    finally:
        sbx.kill()


def test_twenty_parallel_sandboxes_do_not_cross_talk(sdk: dict[str, str]) -> None:
    def one(i: int) -> tuple[str, list[str]]:
        sbx = Sandbox.create(envs={"IDX": str(i)}, timeout=60, **sdk)
        try:
            sbx.files.write("/home/user/id.txt", f"file-{i}")
            out = sbx.commands.run('cat id.txt; echo " env-$IDX"').stdout
            names = sorted(e.name for e in sbx.files.list("/home/user"))
            return out, names
        finally:
            sbx.kill()

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    for i, (out, names) in enumerate(results):
        assert out == f"file-{i} env-{i}\n"
        assert names == ["id.txt"]


def test_async_sdk_round_trip(sdk: dict[str, str]) -> None:
    async def main() -> tuple[str, str, bytes]:
        sbx = await AsyncSandbox.create(envs={"MODE": "async"}, timeout=60, **sdk)
        try:
            await sbx.files.write("/home/user/a.bin", b"\x00async\xff")
            result = await sbx.commands.run('echo "$MODE"; wc -c < a.bin')
            data = await sbx.files.read("/home/user/a.bin", format="bytes")
            return result.stdout, sbx.sandbox_id, bytes(data)
        finally:
            await sbx.kill()

    stdout, sandbox_id, data = asyncio.run(main())
    assert stdout == "async\n7\n"
    assert data == b"\x00async\xff"
    assert sandbox_id


# -- security ---------------------------------------------------------------------
def test_dotdot_escape_is_refused(sbx: Sandbox) -> None:
    with pytest.raises(SandboxException, match="escapes the sandbox root"):
        sbx.files.write("../../../../tmp/osiris-escape.txt", "x")
    with pytest.raises(SandboxException, match="escapes the sandbox root"):
        sbx.files.read("/../../etc/passwd")
    with pytest.raises(SandboxException, match="escapes the sandbox root"):
        sbx.files.list("/home/../../..")
    assert not os.path.exists("/tmp/osiris-escape.txt")


def test_absolute_host_paths_stay_inside_the_root(sbx: Sandbox) -> None:
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/etc/passwd")  # means <root>/etc/passwd, which does not exist
    sbx.files.write("/etc/osiris-local-test.conf", "inside")
    assert not os.path.exists("/etc/osiris-local-test.conf")
    assert sbx.files.read("/etc/osiris-local-test.conf") == "inside"


def test_symlink_pointing_out_is_refused(sbx: Sandbox) -> None:
    sbx.commands.run("ln -s /etc etc_link && ln -s /etc/hostname host_file")
    with pytest.raises(SandboxException, match="outside the sandbox root"):
        sbx.files.read("/home/user/etc_link/passwd")
    with pytest.raises(SandboxException, match="outside the sandbox root"):
        sbx.files.read("/home/user/host_file")
    with pytest.raises(SandboxException, match="outside the sandbox root"):
        sbx.files.write("/home/user/etc_link/osiris-evil", "x")
    with pytest.raises(SandboxException, match="outside the sandbox root"):
        sbx.files.list("/home/user/etc_link")
    assert not os.path.exists("/etc/osiris-evil")
    sbx.files.remove("/home/user/etc_link")  # removing the link itself is fine
    assert os.path.isdir("/etc")


def test_server_refuses_non_loopback_hosts() -> None:
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.com"):
        with pytest.raises(ValueError, match="refusing to bind"):
            LocalSandboxServer(host=host)
    with LocalSandboxServer(host="localhost") as srv:
        assert srv.url.startswith("http://127.0.0.1:")


def test_two_servers_side_by_side(server: LocalSandboxServer) -> None:
    with LocalSandboxServer(port=0) as other:
        assert other.port != server.port
        sbx = Sandbox.create(timeout=30, **other.sdk_kwargs())
        try:
            assert sbx.commands.run("echo other").stdout == "other\n"
            # the first server does not know the second one's sandbox
            assert Sandbox.list(query=SandboxQuery(metadata={}), **server.sdk_kwargs()).next_items() is not None
            with pytest.raises(SandboxException):
                Sandbox.connect(sbx.sandbox_id, **server.sdk_kwargs())
        finally:
            sbx.kill()
