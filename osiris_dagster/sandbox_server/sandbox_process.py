"""One command running in a sandbox, with its output fanned out to attached streams.

envd decouples a process from the RPC stream that started it: a client disconnect
does not kill the process, ``process.Process/Connect`` re-attaches, ``SendSignal``
kills by pid. So the process owns its output readers and pushes events into the
queues of whichever streams are attached at that moment; streams come and go.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from .connect_protocol import b64encode

# envd sends output in chunks of up to 32 KiB (the SDK docs say the same:
# ``on_stdout`` gets raw chunks, not lines).
OUTPUT_CHUNK_BYTES = 32 * 1024

# How long the end event waits for the output pipes to drain after the process
# exited. A background grandchild (``cmd &``) can keep the pipe open forever; the
# command's own exit must still be reported.
PIPE_DRAIN_GRACE_S = 0.5

Event = dict[str, Any]


class SandboxProcess:
    """A ``/bin/bash -l -c`` child in its own process group, owned by one sandbox."""

    def __init__(
        self,
        *,
        cmd: str,
        args: list[str],
        envs: dict[str, str],
        cwd: str,
        sandbox_cwd: str | None,
        env: dict[str, str],
        stdin: bool,
        tag: str | None,
        on_exit: Callable[[SandboxProcess], None],
        argv_prefix: list[str] | None = None,
    ) -> None:
        self.config: dict[str, Any] = {"cmd": cmd, "args": list(args), "envs": dict(envs)}
        if sandbox_cwd is not None:
            self.config["cwd"] = sandbox_cwd
        self.tag = tag
        self._lock = threading.Lock()
        self._subscribers: list[queue.SimpleQueue[Event]] = []
        self._end_event: Event | None = None
        self._on_exit = on_exit
        self._stdin_open = stdin
        # Set when the owning sandbox is killed or expires: attached streams then end
        # the way E2B's proxy reports a vanished sandbox instead of with an exit code.
        self.sandbox_gone_message: str | None = None
        # start_new_session: the command and everything it spawns share one process
        # group, so kill/expiry can take down grandchildren too (killpg).
        self._popen = subprocess.Popen(
            [*(argv_prefix or []), cmd, *args],  # a prefix that execs (nsenter) keeps the pid
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        self.pid = self._popen.pid

    def start_io(self) -> None:
        """Start readers after the first stream subscribed, so no output is missed."""
        assert self._popen.stdout is not None and self._popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self._popen.stdout.fileno(), "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self._popen.stderr.fileno(), "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._wait, name=f"sandbox-proc-{self.pid}", daemon=True).start()

    # -- streams -------------------------------------------------------------
    def subscribe(self) -> queue.SimpleQueue[Event]:
        """Attach a stream; if the process already ended it gets the end event only."""
        q: queue.SimpleQueue[Event] = queue.SimpleQueue()
        with self._lock:
            if self._end_event is not None:
                q.put(self._end_event)
            else:
                self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.SimpleQueue[Event]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def _broadcast(self, event: Event) -> None:
        with self._lock:
            for q in self._subscribers:
                q.put(event)

    # -- lifecycle -------------------------------------------------------------
    def _pump(self, fd: int, stream_name: str) -> None:
        while True:
            try:
                chunk = os.read(fd, OUTPUT_CHUNK_BYTES)
            except OSError:
                break
            if not chunk:
                break
            self._broadcast({"data": {stream_name: b64encode(chunk)}})

    def _wait(self) -> None:
        returncode = self._popen.wait()
        for reader in self._readers:
            reader.join(timeout=PIPE_DRAIN_GRACE_S)
        for pipe in (self._popen.stdout, self._popen.stderr, self._popen.stdin):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        end = _end_event(returncode)
        if self.sandbox_gone_message is not None:
            end = {"sandboxGone": self.sandbox_gone_message}
        with self._lock:
            self._end_event = end
            subscribers, self._subscribers = self._subscribers, []
        for q in subscribers:
            q.put(end)
        self._on_exit(self)

    @property
    def running(self) -> bool:
        return self._end_event is None

    def send_signal(self, signum: int) -> None:
        """Signal the whole process group (bash and whatever it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def kill_with_sandbox(self, message: str) -> None:
        self.sandbox_gone_message = message
        self.kill()

    def write_stdin(self, data: bytes) -> bool:
        """Write to stdin; False when stdin is not open (not requested or closed)."""
        with self._lock:
            stdin = self._popen.stdin if self._stdin_open else None
        if stdin is None:
            return False
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            return False
        return True

    def close_stdin(self) -> bool:
        with self._lock:
            stdin = self._popen.stdin if self._stdin_open else None
            self._stdin_open = False
        if stdin is None:
            return False
        with contextlib.suppress(OSError):
            stdin.close()
        return True

    def info(self) -> dict[str, Any]:
        """proto3-JSON ``process.ProcessInfo``."""
        result: dict[str, Any] = {"config": self.config, "pid": self.pid}
        if self.tag is not None:
            result["tag"] = self.tag
        return result


def _end_event(returncode: int) -> Event:
    """``ProcessEvent.EndEvent`` as envd (Go's ``os.ProcessState``) reports it.

    A signal death is ``exitCode -1, exited false, status "signal: killed"`` there; the
    SDK turns any non-zero exit code into ``CommandExitException`` on ``wait()``.
    """
    if returncode >= 0:
        end: Event = {"exitCode": returncode, "exited": True, "status": f"exit status {returncode}"}
        if returncode == 0:
            del end["exitCode"]  # proto3 JSON omits zero values
    else:
        signame = _signal_description(-returncode)
        end = {"exitCode": -1, "status": f"signal: {signame}"}
    return {"end": end}


def _signal_description(signum: int) -> str:
    # Go's syscall.Signal.String() wording for the common cases.
    names = {signal.SIGKILL: "killed", signal.SIGTERM: "terminated", signal.SIGINT: "interrupt"}
    try:
        return names.get(signal.Signals(signum), signal.Signals(signum).name.lower())
    except ValueError:
        return f"signal {signum}"
