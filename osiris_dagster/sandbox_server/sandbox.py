"""A sandbox (root dir, environment, processes, expiry) and the registry that owns them.

The env rule: a command sees ONLY ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, the
create-time ``envVars`` and the command's own ``envs`` (later wins). Nothing of the
server's environment leaks in - the product runs the same job locally and in E2B
and must not pass by accident because a host variable happened to be set.

``bash -l`` sources ``/etc/profile``, which on Debian *overwrites* PATH (exactly what
happens in a real E2B sandbox). Extra PATH directories the server was configured
with are therefore re-added by a ``~/.profile`` written into the sandbox home, the
same mechanism a template would use.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shlex
import shutil
import string
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .connect_protocol import ConnectError
from .network import HostBridge, SandboxNetwork
from .process_tree import kill_sandbox_processes
from .sandbox_paths import SANDBOX_USER, SandboxPaths
from .sandbox_process import SandboxProcess

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the SDK checks (e2b/envd/versions.py): >= 0.5.7 enables octet-stream uploads
# and close_stdin, >= 0.4.0 means "no default username". File metadata (0.6.2) and
# watch features are not implemented, so the SDK refuses them client-side with a
# clear TemplateException instead of the server silently ignoring them.
ENVD_VERSION = "0.6.1"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def _new_sandbox_id() -> str:
    # Same shape as E2B ids (20 lowercase alphanumerics); ``secrets`` so ids of
    # concurrent creates never collide and are not guessable across tests.
    return "i" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(19))


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat().replace("+00:00", "Z")


class Sandbox:
    """One sandbox: a temp root directory, an environment and its running processes."""

    def __init__(
        self,
        *,
        template_id: str,
        timeout_s: float,
        metadata: dict[str, str],
        env_vars: dict[str, str],
        base_dir: Path | None,
        extra_path: list[str],
        bridge: HostBridge | None = None,
    ) -> None:
        self.sandbox_id = _new_sandbox_id()
        # First: a failure here must not leave a root directory behind.
        self.network = SandboxNetwork(self.sandbox_id, bridge) if bridge is not None else None
        self.template_id = template_id
        self.metadata = dict(metadata)
        self.env_vars = dict(env_vars)
        self.started_at = time.time()
        self.end_at = self.started_at + timeout_s
        self.root = Path(tempfile.mkdtemp(prefix=f"e2b-{self.sandbox_id}-", dir=base_dir))
        self.paths = SandboxPaths(self.root)
        self.paths.home.mkdir(parents=True)
        (self.root / "tmp").mkdir()
        self._extra_path = list(extra_path)
        if extra_path:
            (self.paths.home / ".profile").write_text(
                "# Written by the local sandbox server: /etc/profile resets PATH.\n"
                f'export PATH={shlex.quote(":".join(extra_path))}:"$PATH"\n'
            )
        self._lock = threading.Lock()
        self._processes: dict[int, SandboxProcess] = {}
        self.alive = True

    # -- environment -------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        path = ":".join([*self._extra_path, DEFAULT_PATH])
        return {
            "PATH": path,
            "HOME": str(self.paths.home),
            "USER": SANDBOX_USER,
            "LOGNAME": SANDBOX_USER,
            **self.env_vars,
        }

    # -- processes -------------------------------------------------------------
    def start_process(
        self,
        *,
        cmd: str,
        args: list[str],
        envs: dict[str, str],
        cwd: str | None,
        stdin: bool,
        tag: str | None,
    ) -> SandboxProcess:
        if not self.alive:
            raise ConnectError("unavailable", f"The sandbox {self.sandbox_id} was not found")
        host_cwd = self.paths.to_host(cwd) if cwd else self.paths.home
        if not host_cwd.is_dir():
            raise ConnectError("invalid_argument", f"cwd {cwd!r} does not exist or is not a directory")
        env = {**self.base_env(), **envs}
        try:
            process = SandboxProcess(
                cmd=cmd,
                args=args,
                envs=envs,
                cwd=str(host_cwd),
                sandbox_cwd=cwd,
                env=env,
                stdin=stdin,
                tag=tag,
                on_exit=self._forget,
                argv_prefix=self.network.wrap([]) if self.network else None,
            )
        except OSError as exc:
            raise ConnectError("invalid_argument", f"failed to start {cmd!r}: {exc}") from exc
        with self._lock:
            self._processes[process.pid] = process
            alive = self.alive
        if not alive:  # killed while we were spawning
            process.kill()
        return process

    def _forget(self, process: SandboxProcess) -> None:
        with self._lock:
            if self._processes.get(process.pid) is process:
                del self._processes[process.pid]

    def find_process(self, selector: dict[str, Any]) -> SandboxProcess:
        """Resolve a ``process.ProcessSelector`` (``{"pid": N}`` or ``{"tag": ...}``)."""
        with self._lock:
            processes = list(self._processes.values())
        if "pid" in selector:
            try:
                pid = int(selector["pid"])
            except (TypeError, ValueError) as exc:
                raise ConnectError("invalid_argument", "pid must be an integer") from exc
            for process in processes:
                if process.pid == pid:
                    return process
            raise ConnectError("not_found", f"process with pid {pid} not found")
        if "tag" in selector:
            for process in processes:
                if process.tag == selector["tag"]:
                    return process
            raise ConnectError("not_found", f"process with tag {selector['tag']!r} not found")
        raise ConnectError("invalid_argument", "process selector needs a pid or a tag")

    def list_processes(self) -> list[SandboxProcess]:
        with self._lock:
            return [p for p in self._processes.values() if p.running]

    # -- lifecycle -------------------------------------------------------------
    def kill(self) -> None:
        """Kill every process of the sandbox (not only the command groups), then delete the root."""
        with self._lock:
            self.alive = False
            processes = list(self._processes.values())
        for process in processes:
            process.kill_with_sandbox(f"The sandbox {self.sandbox_id} was not found")
        # Processes that left the commands' groups (daemons, setsid, orphans) die too.
        kill_sandbox_processes(
            self.root, self.paths.home, [p.pid for p in processes], self.network.inode if self.network else None
        )
        if self.network is not None:
            self.network.delete()
        shutil.rmtree(self.root, ignore_errors=True)

    def detail(self) -> dict[str, Any]:
        """Fields shared by the REST ``SandboxDetail`` and ``ListedSandbox`` models."""
        return {
            "templateID": self.template_id,
            "sandboxID": self.sandbox_id,
            "clientID": "local",
            "startedAt": _rfc3339(self.started_at),
            "endAt": _rfc3339(self.end_at),
            "cpuCount": 1,
            "memoryMB": 512,
            "diskSizeMB": 1024,
            "state": "running",
            "envdVersion": ENVD_VERSION,
            "metadata": self.metadata,
        }

    def created(self) -> dict[str, Any]:
        """The REST ``Sandbox`` model returned by create and connect."""
        return {
            "templateID": self.template_id,
            "sandboxID": self.sandbox_id,
            "clientID": "local",
            "envdVersion": ENVD_VERSION,
        }


class SandboxRegistry:
    """All live sandboxes of one server, plus the reaper that enforces timeouts."""

    def __init__(
        self, *, base_dir: Path | None = None, extra_path: list[str] | None = None, bridge: HostBridge | None = None
    ) -> None:
        self._bridge = bridge
        self._base_dir = base_dir
        self._extra_path = list(extra_path or [])
        self._lock = threading.Lock()
        self._sandboxes: dict[str, Sandbox] = {}
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._reaper = threading.Thread(target=self._reap_loop, name="sandbox-reaper", daemon=True)
        self._reaper.start()

    def create(
        self, *, template_id: str, timeout_s: float, metadata: dict[str, str], env_vars: dict[str, str]
    ) -> Sandbox:
        sandbox = Sandbox(
            template_id=template_id,
            timeout_s=timeout_s,
            metadata=metadata,
            env_vars=env_vars,
            base_dir=self._base_dir,
            extra_path=self._extra_path,
            bridge=self._bridge,
        )
        with self._lock:
            if self._closed:
                sandbox.kill()
                raise RuntimeError("registry is closed")
            self._sandboxes[sandbox.sandbox_id] = sandbox
            self._wake.notify()
        return sandbox

    def get(self, sandbox_id: str) -> Sandbox | None:
        """A live sandbox; an expired one is killed on the spot (no reaper race)."""
        with self._lock:
            sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is not None and sandbox.end_at <= time.time():
            self.kill(sandbox_id)
            return None
        return sandbox

    def list(self) -> list[Sandbox]:
        now = time.time()
        with self._lock:
            return [s for s in self._sandboxes.values() if s.end_at > now]

    def set_timeout(self, sandbox_id: str, timeout_s: float) -> bool:
        sandbox = self.get(sandbox_id)
        if sandbox is None:
            return False
        with self._lock:
            sandbox.end_at = time.time() + timeout_s
            self._wake.notify()
        return True

    def extend_timeout(self, sandbox_id: str, timeout_s: float) -> Sandbox | None:
        """``connect`` semantics: never shortens the remaining lifetime."""
        sandbox = self.get(sandbox_id)
        if sandbox is None:
            return None
        with self._lock:
            sandbox.end_at = max(sandbox.end_at, time.time() + timeout_s)
            self._wake.notify()
        return sandbox

    def kill(self, sandbox_id: str) -> bool:
        with self._lock:
            sandbox = self._sandboxes.pop(sandbox_id, None)
        if sandbox is None:
            return False
        sandbox.kill()
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ids = list(self._sandboxes)
            self._wake.notify()
        for sandbox_id in ids:
            self.kill(sandbox_id)

    def _reap_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.time()
                expired = [sid for sid, s in self._sandboxes.items() if s.end_at <= now]
                if not expired:
                    next_end = min((s.end_at for s in self._sandboxes.values()), default=now + 60)
                    self._wake.wait(timeout=max(0.01, min(next_end - now, 60)))
                    continue
            for sandbox_id in expired:
                self.kill(sandbox_id)
