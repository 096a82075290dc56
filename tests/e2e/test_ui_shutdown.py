"""`osiris-dagster ui` stops whole: within 10 s of SIGINT or SIGTERM, with no process of it left,
also when a run is executing at that moment; and when the ui process itself is killed outright,
`dagster dev` and everything it started still go away.

Which processes belong to the UI is decided independently of the product's own bookkeeping: every
process whose environment carries this test's unique DAGSTER_HOME (children inherit it, orphans
keep it), read from /proc, plus every descendant of the `osiris-dagster ui` process seen before the
signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import add_counting_pipeline
from tests.e2e.test_dagster_dev import graphql, start_ui

EXIT_WITHIN_SECONDS = 10
# dagster dev's own shutdown, measured 12-16 s on a loaded 2-core machine, after the run in flight ends.
ORPHAN_DEADLINE_SECONDS = 90
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
LAUNCH = """
mutation($location: String!) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: $location, repositoryName: "__repository__", jobName: "long_count"}
  }) { __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } }
}
"""


# A run still executing when the signal comes: the demo job (a few seconds) could finish between
# two polls of a loaded webserver, and the test then waited for a STARTED it had missed. On SIGINT
# and SIGTERM the ui terminates the run, so it may be endless; after a SIGKILL of the ui nothing of
# ours runs, and Dagster's code server lets a run in flight finish before it exits, so that run is
# a bounded one (~8 s on an idle machine).
RUN_LENGTH = {signal.SIGINT: 2_000_000_000, signal.SIGTERM: 2_000_000_000, signal.SIGKILL: 40_000_000}


def _status_past_start(port: int, run_id: str) -> str | None:
    """The run's status once it is past queueing and starting (None before)."""
    query = f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ status }} }} }}'
    status = graphql(port, query)["data"]["runOrError"]["status"]
    return None if status in ("QUEUED", "NOT_STARTED", "STARTING") else status


def graphql_vars(port: int, query: str, variables: dict) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def live_pids() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every live, non-zombie process."""
    found: dict[int, tuple[int, bytes]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _read(f"/proc/{name}/stat").rpartition(b")")[2].split()
        if len(fields) > 1 and fields[0] != b"Z":
            found[int(name)] = (int(fields[1]), _read(f"/proc/{name}/cmdline").replace(b"\0", b" "))
    return found


def descendants(root: int) -> dict[int, bytes]:
    table = live_pids()
    found: dict[int, bytes] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, cmdline) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = cmdline
                frontier.append(pid)
    return found


def with_home(home: Path) -> dict[int, bytes]:
    """Live processes whose environment holds DAGSTER_HOME=<home> (inherited by every child)."""
    marker = b"DAGSTER_HOME=" + os.fsencode(home) + b"\0"
    table = live_pids()
    return {pid: cmdline for pid, (_, cmdline) in table.items() if marker in _read(f"/proc/{pid}/environ") + b"\0"}


def wait_for(what: str, probe, process: subprocess.Popen, log: Path, timeout: float = 150):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
            value = probe()
            if value:
                return value
        assert process.poll() is None, f"ui exited while waiting for {what}:\n{log.read_text()[-3000:]}"
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


@pytest.mark.e2e
@pytest.mark.parametrize(
    "stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL-of-the-ui"]
)
def test_ui_exits_within_10_seconds_of_a_stop_signal_and_leaves_no_process(
    project: Path, clean_env: dict[str, str], stop: signal.Signals
) -> None:
    home = Path(clean_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    add_counting_pipeline(project, "long-count", RUN_LENGTH[stop])
    ui, port, log = start_ui(project, clean_env)
    try:
        wait_for("the assets in the UI", lambda: graphql(port, "{ assetNodes { id } }")["data"]["assetNodes"], ui, log)
        (location,) = [e["name"] for e in graphql(port, LOCATIONS)["data"]["workspaceOrError"]["locationEntries"]]
        launched = graphql_vars(port, LAUNCH, {"location": location})["data"]["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        status = wait_for("the run to start", lambda: _status_past_start(port, run_id), ui, log)
        assert status == "STARTED", f"the run ended before the signal ({status}):\n{log.read_text()[-3000:]}"
        tree = descendants(ui.pid)
        commands = b"\n".join(tree.values())
        # The code server's gRPC server runs each run in a `multiprocessing` spawn child.
        for piece in (b"dagster dev", b"dagster_webserver", b"dagster._daemon", b"code-server", b"spawn_main"):
            assert piece in commands, f"{piece!r} not among the UI's processes:\n{commands.decode()}"

        signalled = time.monotonic()
        ui.send_signal(stop)
        try:
            code = ui.wait(timeout=EXIT_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"osiris-dagster ui still running {EXIT_WITHIN_SECONDS} s after {stop.name}")
        took = time.monotonic() - signalled
        if stop == signal.SIGKILL:
            # Nothing of ours ran: dagster dev (told by the kernel) stops on its own, more slowly.
            assert code == -signal.SIGKILL
            deadline = time.monotonic() + ORPHAN_DEADLINE_SECONDS
            while time.monotonic() < deadline and (with_home(home) or set(tree) & set(live_pids())):
                time.sleep(0.5)
        else:
            assert code == 0, log.read_text()[-3000:]
        time.sleep(0.5)  # init reaps zombies of killed orphans
        left = {pid: cmd for pid, cmd in tree.items() if pid in live_pids()} | with_home(home)
        assert not left, f"left behind after {stop.name} ({time.monotonic() - signalled:.1f} s): {left}"
        print(
            f"{stop.name}: ui exited in {took:.1f} s, all {len(tree)} processes gone after "
            f"{time.monotonic() - signalled - 0.5:.1f} s"
        )
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
        for pid in [*descendants(ui.pid), *with_home(home)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
