"""A pooled sandbox's warm worker: imports what every run needs, then serves exactly ONE run.

Started by `SandboxPool` when it fills a sandbox, in ``~/osiris`` with the pool's ``code/`` on
``PYTHONPATH``. It imports Dagster, the product's modules and the base libraries (the import time
is most of a cold worker's start-up), creates the sandbox-local sqlite ``DAGSTER_HOME``, records
which of the run modules it found (the dependency check done at fill time), binds a Unix socket
``warm.sock`` and writes ``warm.ready``. It then waits.

A run connects with `warm_client` (a standard-library script started by the supervisor exactly as
the cold worker would be: same command environment, same output stream). The client passes its
stdin/stdout/stderr and its environment over the socket (``SCM_RIGHTS``); the warm worker forks,
the child takes over those descriptors, that environment and that working directory and runs
`worker.main` — the same code as a cold start, minus the imports. The parent waits for the child
and sends its exit code back; the client exits with it. Then the warm worker exits: a sandbox
serves one run only.

Secrets reach the child only through the socket (the client's environment), never through a file.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

SOCKET_NAME = "warm.sock"
READY_NAME = "warm.ready"
READY_LINE = "osiris-warm-ready"
# Imported at fill time; what the product's code location and `dagster api execute_run` need.
_WARM_MODULES = (
    "dagster",
    "dagster._cli.api",
    "dagster._grpc.types",
    "dagster._core.snap",
    "dagster._core.storage.dagster_run",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "osiris_dagster.remote.relayed_event_log",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.execution.api",
    "osiris_dagster.components.pipeline_component",
    "osiris_dagster.components.resources",
    "osiris_dagster.components.sensors",
    "osiris_dagster.remote.worker",
    "osiris_dagster.remote.result_archive",
)
_MAX_MESSAGE = 16 * 1024 * 1024


def _log(message: str) -> None:
    print(f"[osiris warm worker] {message}", file=sys.stderr, flush=True)


def warm(modules: list[str]) -> dict[str, list[str]]:
    """Import the run modules (the preflight, done once at fill time) and the worker's own."""
    found, missing = [], []
    for name in [*modules, *_WARM_MODULES]:
        try:
            importlib.import_module(name)
            found.append(name)
        except Exception as error:  # a missing module is the run's preflight's business
            missing.append(name)
            _log(f"could not import {name}: {type(error).__name__}: {error}")
    return {"present": found, "missing": missing}


def _create_instance() -> None:
    """Create the sandbox-local sqlite instance now (schema creation is a few hundred ms)."""
    from dagster import DagsterInstance

    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.get():
        pass


def _receive(connection: socket.socket) -> tuple[dict[str, object], list[int]]:
    data, fds, _flags, _address = socket.recv_fds(connection, 1 << 16, 3)
    chunks = [data]
    size = len(data)
    while chunk := connection.recv(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_MESSAGE:
            raise ValueError("warm worker request too large")
    return json.loads(b"".join(chunks)), list(fds)


def _run_child(request: dict[str, object], fds: list[int]) -> None:
    """In the forked child: become the cold worker's process, run it, never return."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[arg-type]
        os.chdir(str(request["cwd"]))
        from osiris_dagster.remote import worker

        code = worker.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(modules: list[str]) -> int:
    started = time.perf_counter()
    report = warm(modules)
    _create_instance()
    for path in (Path(SOCKET_NAME), Path(READY_NAME)):
        path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(SOCKET_NAME)  # relative: the sandbox path may be longer than sun_path allows
    server.listen(1)
    report["warm_ms"] = [str(int((time.perf_counter() - started) * 1000))]
    temp = Path(READY_NAME + ".tmp")
    temp.write_text(json.dumps(report))
    temp.rename(READY_NAME)
    _log(f"ready in {report['warm_ms'][0]} ms")
    print(READY_LINE, flush=True)  # the filler waits for this line, then detaches
    connection, _ = server.accept()
    server.close()
    Path(SOCKET_NAME).unlink(missing_ok=True)
    request, fds = _receive(connection)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        connection.close()
        _run_child(request, fds)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    connection.sendall(str(code).encode())
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(json.loads(os.environ.get("OSIRIS_WARM_MODULES", "[]"))))
