"""envd's ``process.Process`` Connect service: Start/Connect streams and the unary controls.

Stream semantics the SDK relies on (``e2b/sandbox_sync/commands/command.py`` and
``command_handle.py``):

* the first message is ``{"event": {"start": {"pid": N}}}`` (``extract_start_pid``);
* output arrives as ``data`` events with base64 ``stdout``/``stderr`` chunks;
* ``keepalive`` events every ``Keepalive-Ping-Interval`` seconds keep idle
  connections alive through proxies;
* ``end`` carries the exit code; a non-zero code makes ``wait()`` raise
  ``CommandExitException``; then the end-of-stream envelope closes the call.

``Connect-Timeout-Ms`` on ``Start`` is the command ``timeout``: when it expires the
process group is killed and the stream ends with ``deadline_exceeded`` (the SDK's
``TimeoutException``). On ``Connect`` it only bounds the re-attached stream. A client
that goes away never kills the process (``CommandHandle.disconnect`` relies on it).
"""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .connect_protocol import ConnectError, b64decode, encode_envelope, end_of_stream
from .faults import FaultInjector
from .http_exchange import Exchange
from .sandbox import Sandbox
from .sandbox_process import SandboxProcess

SERVICE = "process.Process"
DEFAULT_KEEPALIVE_S = 50.0
_SIGNALS = {
    "SIGNAL_SIGKILL": signal.SIGKILL,
    "SIGNAL_SIGTERM": signal.SIGTERM,
    9: signal.SIGKILL,
    15: signal.SIGTERM,
}
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def _selector(request: dict[str, Any]) -> dict[str, Any]:
    selector = request.get("process")
    if not isinstance(selector, dict):
        raise ConnectError("invalid_argument", "process selector is required")
    return selector


# -- unary ---------------------------------------------------------------------
def send_signal(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    process = sandbox.find_process(_selector(request))
    signum = _SIGNALS.get(request.get("signal", ""))
    if signum is None:
        raise ConnectError("invalid_argument", f"unsupported signal {request.get('signal')!r}")
    process.send_signal(signum)
    return {}


def send_input(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    process = sandbox.find_process(_selector(request))
    payload = request.get("input") or {}
    data = b64decode(payload.get("stdin", "")) if isinstance(payload, dict) else b""
    if isinstance(payload, dict) and "pty" in payload:
        raise ConnectError("unimplemented", "PTY is not implemented by the local sandbox server")
    if not process.write_stdin(data):
        raise ConnectError("failed_precondition", f"stdin of process {process.pid} is not open")
    return {}


def close_stdin(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    process = sandbox.find_process(_selector(request))
    if not process.close_stdin():
        raise ConnectError("failed_precondition", f"stdin of process {process.pid} is not open")
    return {}


def list_processes(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    processes = [p.info() for p in sorted(sandbox.list_processes(), key=lambda p: p.pid)]
    return {"processes": processes} if processes else {}


def _unimplemented(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    raise ConnectError("unimplemented", "PTY resize is not implemented by the local sandbox server")


UNARY_METHODS: dict[str, Callable[[Sandbox, dict[str, Any]], dict[str, Any]]] = {
    "SendSignal": send_signal,
    "SendInput": send_input,
    "CloseStdin": close_stdin,
    "List": list_processes,
    "Update": _unimplemented,
}


# -- server streams ------------------------------------------------------------
@dataclass(frozen=True)
class StreamCut:
    """A scheduled fault-injection reset of one stream (``time.monotonic()`` moment)."""

    at: float
    injector: FaultInjector
    sandbox_id: str
    method: str


def start(sandbox: Sandbox, request: dict[str, Any]) -> SandboxProcess:
    """Spawn the process described by a ``process.StartRequest``."""
    config = request.get("process")
    if not isinstance(config, dict) or not isinstance(config.get("cmd"), str) or not config["cmd"]:
        raise ConnectError("invalid_argument", "process.cmd is required")
    if request.get("pty"):
        raise ConnectError("unimplemented", "PTY is not implemented by the local sandbox server")
    args = config.get("args") or []
    envs = config.get("envs") or {}
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConnectError("invalid_argument", "process.args must be a list of strings")
    if not isinstance(envs, dict) or not all(isinstance(v, str) for v in envs.values()):
        raise ConnectError("invalid_argument", "process.envs must map strings to strings")
    cwd = config.get("cwd") or None
    return sandbox.start_process(
        cmd=config["cmd"],
        args=args,
        envs=envs,
        cwd=cwd,
        stdin=bool(request.get("stdin", False)),
        tag=request.get("tag") or None,
    )


def stream_events(
    exchange: Exchange,
    process: SandboxProcess,
    events: queue.SimpleQueue[dict[str, Any]],
    *,
    timeout_ms: int | None,
    keepalive_s: float,
    kill_on_deadline: bool,
    cut: StreamCut | None = None,
) -> None:
    """Write start/data/keepalive/end envelopes until the process ends or time runs out.

    With ``cut`` (fault injection) the TCP connection is reset at ``cut.at`` unless the
    stream ended before; the process is not touched.
    """
    deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
    exchange.start_chunked(200, "application/connect+json")
    try:
        exchange.write_chunk(encode_envelope({"event": {"start": {"pid": process.pid}}}))
        while True:
            wait_s = keepalive_s
            if cut is not None:
                until_cut = cut.at - time.monotonic()
                if until_cut <= 0:
                    exchange.abort()
                    cut.injector.record(cut.sandbox_id, "stream", f"{cut.method} stream of pid {process.pid}")
                    cut = None
                    return
                wait_s = min(wait_s, until_cut)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if kill_on_deadline:
                        process.kill()
                    error = ConnectError(
                        "deadline_exceeded",
                        "the command timed out and was killed" if kill_on_deadline else "the stream timed out",
                    )
                    exchange.write_chunk(end_of_stream(error))
                    break
                wait_s = min(wait_s, remaining)
            try:
                event = events.get(timeout=wait_s)
            except queue.Empty:
                if cut is not None and cut.at <= time.monotonic():
                    continue  # woke up for the cut, not for a keepalive
                if deadline is None or time.monotonic() < deadline:
                    exchange.write_chunk(encode_envelope({"event": {"keepalive": {}}}))
                continue
            # Batch what is already queued into one write: fewer syscalls and packets.
            batch = [event]
            while len(batch) < 64:
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            gone = next((e["sandboxGone"] for e in batch if "sandboxGone" in e), None)
            if gone is not None:
                # Killed/expired sandbox: its VM is gone, and with it the connection. E2B's
                # clients see a transport failure, probe the sandbox's health (502 "not
                # found") and raise SandboxNotRunningException "... killed or reached its end
                # of life" (e2b/envd/rpc.py format_terminated_exception). Deliver what was
                # produced before, then reset - never a clean end of stream.
                batch = [e for e in batch if "sandboxGone" not in e]
                if batch:
                    exchange.write_chunk(b"".join(encode_envelope({"event": e}) for e in batch))
                exchange.abort()
                return
            ended = any("end" in e for e in batch)
            payload = b"".join(encode_envelope({"event": e}) for e in batch)
            if ended:
                payload += end_of_stream()
            exchange.write_chunk(payload)
            if ended:
                break
        exchange.end_chunked()
    except _CLIENT_GONE:
        # The client went away (disconnect, its own deadline): the process lives on.
        exchange.close_connection()
    finally:
        process.unsubscribe(events)
        if cut is not None:
            cut.injector.stream_ended_uncut(cut.sandbox_id)


def parse_timeout_ms(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConnectError("invalid_argument", f"invalid Connect-Timeout-Ms {raw!r}") from exc
    return value if value > 0 else None


def parse_keepalive_s(raw: str | None) -> float:
    try:
        value = float(raw) if raw else DEFAULT_KEEPALIVE_S
    except ValueError:
        value = DEFAULT_KEEPALIVE_S
    return value if value > 0 else DEFAULT_KEEPALIVE_S
