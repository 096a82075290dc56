"""A warm pool of idle, dependency-checked sandboxes; each serves exactly ONE run.

There is no long-lived launcher process (`launch_run` runs in the daemon or a short-lived
`dagster job launch`; each run has its own detached supervisor), so the pool's state lives in the
sandbox service itself:

* a pooled sandbox is created with metadata ``osiris/pool=<name>``, ``osiris/pool_key=<template +
  interpreter>`` and ``osiris/code=<code hash>``, and a timeout of ``idle_ttl_s``: the service
  expires idle sandboxes, nobody has to;
* filling uploads the product's code, starts the `warm_worker` (which imports Dagster and the run
  modules — the dependency check — and creates the sandbox-local instance) and, once it reports
  ready, creates the directory ``~/.osiris-pool/idle``: only then is the sandbox claimable;
* a supervisor claims one with ONE atomic rename, ``~/.osiris-pool/idle`` ->
  ``~/.osiris-pool/claimed-<run id>`` (rename(2): of concurrent claimers exactly one succeeds, the
  others get "not found" and try the next sandbox), then sets the run's lifetime
  (``sandbox_timeout_s``). The marker stays in the sandbox, naming its run; a claimed sandbox is
  never offered again and is killed with its run;
* a top-up (`fill`) counts the pool's unclaimed sandboxes (idle or still filling) and creates the
  missing ones. Supervisors start one detached (``python -m osiris_dagster.remote.sandbox_pool
  fill``) after they claimed; a host-side lock file serializes top-ups so concurrent launches do
  not overfill, and a top-up asked for by a run whose claim a later count already saw is skipped
  (``pool-<name>.counted``: when the last count began), so a burst of runs ending does not
  refill a pool that was drained meanwhile.

Command line (reads the launcher config of ``$DAGSTER_HOME/dagster.yaml``)::

    python -m osiris_dagster.remote.sandbox_pool fill|status|drain
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from e2b import Sandbox, SandboxQuery, SandboxState

from osiris_dagster.remote.bundle import SANDBOX_DIR, build_code_bundle, code_hash
from osiris_dagster.remote.settings import SandboxSettings

log = logging.getLogger("osiris_dagster.remote.sandbox_pool")

POOL_METADATA = "osiris/pool"
POOL_KEY_METADATA = "osiris/pool_key"
CODE_METADATA = "osiris/code"
STATE_DIR = "/home/user/.osiris-pool"
IDLE_MARKER = f"{STATE_DIR}/idle"
CLAIM_PREFIX = "claimed-"
CODE_ARCHIVE = "code.tar.gz"
WARM_MODULE = "osiris_dagster.remote.warm_worker"
WARM_CLIENT = "code/osiris_dagster/remote/warm_client.py"
_PREPARE_TIMEOUT_S = 180
# `connect` extends (never shortens) a sandbox's lifetime to at least this: short, so a look at an
# idle sandbox does not keep it alive.
_PEEK_TIMEOUT_S = 1
_CLAIM_CONNECT_TIMEOUT_S = 30


def claim_marker(run_id: str) -> str:
    return f"{STATE_DIR}/{CLAIM_PREFIX}{run_id}"


@dataclass(frozen=True)
class ClaimedSandbox:
    sandbox: Sandbox
    code_hash: str
    duration_ms: int


@dataclass(frozen=True)
class PooledSandbox:
    sandbox_id: str
    state: str  # "idle", "filling" or "claimed by <run id>"
    code_hash: str
    end_at: str
    started_at: float = 0.0  # epoch seconds

    @property
    def stale(self) -> bool:
        """Still "filling" long after any fill would have finished: its filler died."""
        return self.state == "filling" and time.time() - self.started_at > _PREPARE_TIMEOUT_S


class SandboxPool:
    def __init__(self, settings: SandboxSettings, *, lock_dir: Path | None = None) -> None:
        self.settings = settings
        self.lock_dir = lock_dir

    @property
    def name(self) -> str:
        return self.settings.pool_name

    @property
    def key(self) -> str:
        """Sandboxes from another template or interpreter are not this pool's."""
        identity = json.dumps([self.settings.template, self.settings.python, self.settings.backend])
        return sha256(identity.encode()).hexdigest()[:12]

    # -- claiming (the supervisor, on the run's critical path) --------------------------
    def claim(self, run_id: str) -> ClaimedSandbox | None:
        """Take one idle sandbox for ``run_id`` (exactly once across claimers), or None."""
        started = time.perf_counter()
        for info in self._list():
            try:
                sandbox = Sandbox.connect(
                    info.sandbox_id, timeout=_CLAIM_CONNECT_TIMEOUT_S, **self.settings.sdk_kwargs()
                )
                sandbox.files.rename(IDLE_MARKER, claim_marker(run_id))
            except Exception as error:  # claimed by another run, still filling, or just expired
                log.debug("sandbox %s not claimable: %s", info.sandbox_id, error)
                continue
            sandbox.set_timeout(self.settings.sandbox_timeout_s)
            duration_ms = int((time.perf_counter() - started) * 1000)
            log.info("claimed pooled sandbox %s for run %s in %d ms", sandbox.sandbox_id, run_id, duration_ms)
            return ClaimedSandbox(sandbox, info.metadata.get(CODE_METADATA, ""), duration_ms)
        return None

    # -- filling ---------------------------------------------------------------------
    def fill(self, claimed_at: float | None = None) -> list[str]:
        """Top the pool up to ``pool_size`` unclaimed sandboxes; return the ids of the new ones.

        ``claimed_at``: when the requesting run's claim ended. A count that began after it has
        already replaced what that run took: then there is nothing to do for it.
        """
        with self._lock():
            counted = self.lock_dir / f"pool-{self.name}.counted" if self.lock_dir is not None else None
            if claimed_at is not None and counted is not None and _read_time(counted) > claimed_at:
                log.info("pool %r: a top-up since this run's claim already counted it", self.name)
                return []
            counting_since = time.time()
            unclaimed = [s for s in self.status() if not s.state.startswith("claimed")]
            for pooled in [s for s in unclaimed if s.stale]:
                with contextlib.suppress(Exception):
                    Sandbox.kill(pooled.sandbox_id, **self.settings.sdk_kwargs())
            unclaimed = [s for s in unclaimed if not s.stale]
            missing = max(0, self.settings.pool_size - len(unclaimed))
            created = [self._create() for _ in range(missing)]  # listed (hence counted) at once
            if counted is not None:
                counted.write_text(repr(counting_since), encoding="utf-8")
        threads = [threading.Thread(target=self._prepare_or_kill, args=(sandbox,)) for sandbox in created]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [sandbox.sandbox_id for sandbox in created]

    def _create(self) -> Sandbox:
        return Sandbox.create(
            template=self.settings.template,
            # Long enough to prepare it; the idle TTL starts once it is ready (`prepare`).
            timeout=self.settings.pool_idle_ttl_s + _PREPARE_TIMEOUT_S,
            metadata={POOL_METADATA: self.name, POOL_KEY_METADATA: self.key, CODE_METADATA: code_hash()},
            **self.settings.sdk_kwargs(),
        )

    def _prepare_or_kill(self, sandbox: Sandbox) -> None:
        try:
            self.prepare(sandbox)
        except Exception as error:
            log.warning("pooled sandbox %s could not be prepared, killing it: %s", sandbox.sandbox_id, error)
            with contextlib.suppress(Exception):
                sandbox.kill()

    def prepare(self, sandbox: Sandbox) -> None:
        """Upload the code, start the warm worker, wait until it is ready, mark the sandbox idle."""
        started = time.perf_counter()
        sandbox.files.write(f"{SANDBOX_DIR}/{CODE_ARCHIVE}", build_code_bundle())
        python = shlex.quote(self.settings.python)
        command = (
            f"tar xzf {CODE_ARCHIVE} && rm {CODE_ARCHIVE} && mkdir -p deps && "
            'PYTHONPATH="$PWD/code:$PWD/deps" DAGSTER_HOME="$PWD/dagster_home" '
            f"exec {python} -m {WARM_MODULE} 2>>warm.log"
        )
        handle = sandbox.commands.run(
            command,
            background=True,
            timeout=0,
            cwd=SANDBOX_DIR,
            envs={"OSIRIS_WARM_MODULES": json.dumps(_warm_modules(self.settings))},
        )
        from osiris_dagster.remote.warm_worker import READY_LINE

        output = ""
        deadline = time.monotonic() + _PREPARE_TIMEOUT_S
        for stdout, _stderr, _pty in handle:
            output += stdout or ""
            if READY_LINE in output or time.monotonic() > deadline:
                break
        if READY_LINE not in output:
            raise RuntimeError(f"the warm worker did not become ready: {output[-500:]!r}")
        handle.disconnect()  # the warm worker lives on; nothing more is read from this stream
        # The idle TTL first: once the marker exists a claimer may set the run's lifetime at any moment.
        sandbox.set_timeout(self.settings.pool_idle_ttl_s)
        sandbox.files.make_dir(IDLE_MARKER)
        log.info("pooled sandbox %s idle after %.0f ms", sandbox.sandbox_id, (time.perf_counter() - started) * 1000)

    def start_fill_detached(self, log_file: Path, claimed_at: float | None = None) -> subprocess.Popen[bytes]:
        """A top-up in its own process (the run does not wait for it)."""
        command = [sys.executable, "-m", __name__, "fill", "--settings-json", self.settings.to_json()]
        if self.lock_dir is not None:
            command += ["--lock-dir", str(self.lock_dir)]
        if claimed_at is not None:
            command += ["--claimed-at", repr(claimed_at)]
        with open(log_file, "ab") as output:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        threading.Thread(target=process.wait, name=f"reap-pool-fill-{process.pid}", daemon=True).start()
        return process

    # -- looking -----------------------------------------------------------------------
    def status(self) -> list[PooledSandbox]:
        found = []
        for info in self._list():
            try:
                sandbox = Sandbox.connect(info.sandbox_id, timeout=_PEEK_TIMEOUT_S, **self.settings.sdk_kwargs())
                has_state = sandbox.files.exists(STATE_DIR)
                names = [entry.name for entry in sandbox.files.list(STATE_DIR)] if has_state else []
            except Exception as error:  # expired between the list and the look
                log.debug("sandbox %s: %s", info.sandbox_id, error)
                continue
            claimed = [n[len(CLAIM_PREFIX) :] for n in names if n.startswith(CLAIM_PREFIX)]
            state = f"claimed by {claimed[0]}" if claimed else "idle" if "idle" in names else "filling"
            found.append(
                PooledSandbox(
                    info.sandbox_id,
                    state,
                    info.metadata.get(CODE_METADATA, ""),
                    info.end_at.isoformat(),
                    info.started_at.timestamp(),
                )
            )
        return found

    def drain(self) -> list[str]:
        """Kill the pool's unclaimed sandboxes (claimed ones belong to their runs)."""
        with self._lock():
            killed = []
            for pooled in self.status():
                if not pooled.state.startswith("claimed"):
                    Sandbox.kill(pooled.sandbox_id, **self.settings.sdk_kwargs())
                    killed.append(pooled.sandbox_id)
            return killed

    def _list(self) -> list[Any]:
        paginator = Sandbox.list(
            query=SandboxQuery(
                metadata={POOL_METADATA: self.name, POOL_KEY_METADATA: self.key}, state=[SandboxState.RUNNING]
            ),
            **self.settings.sdk_kwargs(),
        )
        infos: list[Any] = []
        while paginator.has_next:
            infos.extend(paginator.next_items())
        return sorted(infos, key=lambda info: info.started_at)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if self.lock_dir is None:
            yield
            return
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_dir / f"pool-{self.name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _read_time(path: Path) -> float:
    try:
        return float(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0.0


def _warm_modules(settings: SandboxSettings) -> list[str]:
    """What a run may import: checked (imported) once, at fill time."""
    from osiris_dagster.remote.job_needs import BASE_MODULES, FAMILY_MODULES

    modules = [*BASE_MODULES, *(m for family in FAMILY_MODULES.values() for m in family), *settings.preflight_modules]
    return list(dict.fromkeys(modules))


def _instance_settings(dagster_home: str | None) -> tuple[SandboxSettings, Path]:
    from dagster import DagsterInstance

    from osiris_dagster.remote.launcher import E2BRunLauncher

    home = dagster_home or os.environ.get("DAGSTER_HOME")
    if not home:
        raise SystemExit("set DAGSTER_HOME (or --dagster-home) to the instance whose launcher has `pool:`")
    with DagsterInstance.from_config(home) as instance:
        launcher = instance.run_launcher
        if not isinstance(launcher, E2BRunLauncher):
            raise SystemExit(f"{home}/dagster.yaml does not configure the E2BRunLauncher")
        return launcher.settings, Path(instance.root_directory) / "e2b"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osiris_dagster.remote.sandbox_pool")
    parser.add_argument("action", choices=["fill", "status", "drain"])
    parser.add_argument("--dagster-home")
    parser.add_argument("--settings-json", help=argparse.SUPPRESS)
    parser.add_argument("--lock-dir", help=argparse.SUPPRESS)
    parser.add_argument("--claimed-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.settings_json:
        settings = SandboxSettings.from_json(args.settings_json)
        lock_dir = Path(args.lock_dir) if args.lock_dir else None
    else:
        settings, lock_dir = _instance_settings(args.dagster_home)
    pool = SandboxPool(settings, lock_dir=lock_dir)
    if args.action == "fill":
        if settings.pool_size <= 0:
            print("the launcher config has no pool (pool: {size: N})")
            return 1
        created = pool.fill(claimed_at=args.claimed_at)
        print(f"pool {pool.name}: {len(created)} sandbox(es) added: {' '.join(created)}")
    elif args.action == "status":
        for pooled in pool.status():
            print(f"{pooled.sandbox_id}  {pooled.state:<48}  code {pooled.code_hash}  expires {pooled.end_at}")
    else:
        killed = pool.drain()
        print(f"pool {pool.name}: {len(killed)} unclaimed sandbox(es) killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
