"""`RunSupervisor`: owns ONE remote run from sandbox creation to sandbox kill.

`E2BRunLauncher.launch_run` must return at once (`dagster job launch` exits right after it, the
daemon launches many runs), so it hands the run to the supervision service of its DAGSTER_HOME
(`supervision_service`), which runs a `RunSupervisor` per run in a thread. It:

1. works out what the run needs (least-privilege env, preflight modules — `job_needs`);
2. creates the sandbox with the real `e2b` SDK, retrying transient failures (rate limit, 5xx,
   "sandbox not found", timeouts) with exponential backoff and jitter;
3. uploads ONE bundle and starts the worker in the background with ``timeout=0`` (any other
   value makes envd kill a long run), relaying its stdout through `EventRelay`;
4. downloads ONE result archive, unpacks it safely into the project, copies compute logs into
   the host's storage, appends the remote-only events and metrics to the session directory;
5. kills the sandbox — in every outcome, including cancel and its own failure.

The ``cancel`` file in the run directory (created by `E2BRunLauncher.terminate`) asks the worker
to cancel the run; the relayed RUN_CANCELED ends it on the host. If the worker does not answer
within ``cancel_grace_s`` the sandbox is killed and the run is marked CANCELED from here.

Its log records go to ``supervisor.log`` in the run directory, masked (`supervision_logs`).
``python -m osiris_dagster.remote.supervisor <run dir> [--resume]`` still supervises one run in
a process of its own (for debugging; SIGTERM there cancels like the ``cancel`` file).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from e2b import CommandExitException, Sandbox
from e2b.exceptions import (
    NotFoundException,
    RateLimitException,
    SandboxException,
    ServiceBusyException,
    TimeoutException,
)
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

from osiris_dagster.project import ProjectLayout
from osiris_dagster.remote import relay_protocol as protocol
from osiris_dagster.remote.run_files import RunFiles
from osiris_dagster.remote.run_lock import RunLock
from osiris_dagster.remote.sandbox_lease import SandboxLease, kill_sandbox
from osiris_dagster.remote.settings import SandboxSettings
from osiris_dagster.remote.supervision_logs import MaskedStream, inherit
from osiris_dagster.remote.tags import SANDBOX_ID_TAG, SANDBOX_METADATA_RUN_ID, SUPERVISOR_PID_TAG
from osiris_dagster.secrets import is_secret_key, mask_text, register_secret

log = logging.getLogger("osiris_dagster.remote.supervisor")

WORKER_MODULE = "osiris_dagster.remote.worker"
# The launcher's class name, which prefixes its engine events (a test checks it is the class's).
LAUNCHER_NAME = "E2BRunLauncher"
_STDERR_TAIL_LINES = 40
# How long a dropped stream may stay unreattachable while the sandbox says it runs.
_RECONNECT_BUDGET_S = 300.0
# File transfers (bundle up, log and results down) retried on any error but "not found".
_TRANSFER_ATTEMPTS = 5


def _transfer(call: Any, *args: Any, **kwargs: Any) -> Any:
    """One file transfer, retried with backoff: a reset connection is not a failed run."""
    retrying = Retrying(
        stop=stop_after_attempt(_TRANSFER_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception(lambda error: not isinstance(error, NotFoundException)),
        reraise=True,
        before_sleep=lambda state: log.warning("file transfer failed, retrying: %s", state.outcome.exception()),
    )
    return retrying(call, *args, **kwargs)


@dataclass
class _Outcome:
    """What the supervisor learnt about the run, for the session log and the host run's end."""

    sandbox_id: str | None = None
    create_ms: int = 0
    # Set when the sandbox came from the warm pool: {"pool", "duration_ms", "warm"}.
    claimed: dict[str, Any] | None = None
    overhead_ms: int | None = None
    preflight: dict[str, Any] | None = None
    installed: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    exit_code: int | None = None
    error: str | None = None
    download: dict[str, int] | None = None
    stderr_tail: list[str] = field(default_factory=list)
    # The worker's command in the sandbox (what `commands.connect` reattaches to).
    worker_pid: int | None = None
    session_recorded: bool = False
    kill_confirmed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "stderr_tail"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Outcome:
        return cls(**{name: value for name, value in data.items() if name in cls.__dataclass_fields__})


class _StderrTail:
    """Keeps the worker's last stderr lines (masked) and mirrors them to the supervisor log."""

    def __init__(self) -> None:
        self._partial = ""
        self.lines: list[str] = []

    def feed(self, chunk: str) -> None:
        parts = (self._partial + chunk).split("\n")
        self._partial = parts.pop()
        for line in parts:
            masked = mask_text(line)
            log.info("sandbox: %s", masked)
            self.lines = [*self.lines[-(_STDERR_TAIL_LINES - 1) :], masked]


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, RateLimitException | NotFoundException | TimeoutException | ServiceBusyException):
        return True
    if isinstance(error, OSError):  # connection refused/reset on the way to the API
        return True
    return isinstance(error, SandboxException) and re.search(r"\b5\d\d\b", str(error)) is not None


@dataclass(frozen=True)
class _Needs:
    env: dict[str, str]
    modules: tuple[str, ...]


@dataclass(frozen=True)
class RunSpec:
    """What the launcher hands the supervisor (``supervisor.json``, mode 0600).

    The launcher already holds the run and its snapshots in memory, so it serializes them here:
    the supervisor can then create the sandbox and start the worker before it imports Dagster
    (~1 s), and imports it while the sandbox boots.
    """

    run_id: str
    job_name: str
    # pipeline name -> OML step ids the run executes (`run_selection.plan_step_ids`).
    step_ids: dict[str, list[str]]
    run_params: dict[str, Any]
    payload: dict[str, str]
    instance_ref: str
    settings: SandboxSettings
    project: ProjectLayout
    launched_at: float
    # Variable names and modules the launcher worked out (`launcher._needs_spec`), or None.
    needs: dict[str, list[str]] | None = None
    # What the sandbox is created with; the reaper lists by it (`sandbox_reaper.sandbox_metadata`).
    sandbox_metadata: dict[str, str] | None = None
    # The launcher's `job_needs.host_versions()`, for the worker's version check (None: older spec).
    versions: dict[str, str] | None = None

    @classmethod
    def read(cls, path: Path) -> RunSpec:
        spec = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            run_id=spec["run_id"],
            job_name=spec["job_name"],
            step_ids=spec.get("step_ids") or {spec["job_name"]: ["*"]},
            run_params=spec["run_params"],
            payload=spec["payload"],
            instance_ref=spec["instance_ref"],
            settings=SandboxSettings.from_json(spec["settings"]),
            project=ProjectLayout.discover(spec["project_dir"]),
            launched_at=spec["launched_at"],
            needs=spec.get("needs"),
            sandbox_metadata=spec.get("sandbox_metadata"),
            versions=spec.get("versions"),
        )


class RunSupervisor:
    def __init__(
        self,
        spec: RunSpec,
        files: RunFiles,
        environ: Mapping[str, str] | None = None,
        before_dagster: Callable[[], object] | None = None,
    ) -> None:
        """``environ``: where the values of the run's variables come from (the launching process's).

        ``before_dagster``: called before the run first uses Dagster; the supervision service
        waits there for its warm-up thread to have imported Dagster (two threads importing it at
        once fail on its import cycles).
        """
        self.spec = spec
        self._before_dagster = before_dagster
        self.environ = os.environ if environ is None else environ
        self.run_id = spec.run_id
        self.settings = spec.settings
        self.project = spec.project
        self.files = files
        self._cancel = threading.Event()
        self._outcome = _Outcome()
        self._pool: Any = None
        self._pool_code: str | None = None
        # When this run's claim on the pool ended (a top-up counted after it has replaced it).
        self._claimed_at: float | None = None
        self._topped_up = False
        self._sandbox: Sandbox | None = None
        self._relay: Any = None
        # Renews the sandbox's timeout from the moment it is ours until it is killed (`sandbox_lease`).
        self._lease: SandboxLease | None = None

    @cached_property
    def instance(self) -> Any:
        if self._before_dagster is not None:
            self._before_dagster()
        from dagster import DagsterInstance, deserialize_value
        from dagster._core.instance.ref import InstanceRef

        return DagsterInstance.from_ref(deserialize_value(self.spec.instance_ref, InstanceRef))

    # -- the whole run -------------------------------------------------------------
    def _since_launch(self) -> int:
        return int((time.time() - self.spec.launched_at) * 1000)

    def close(self) -> None:
        """Release the host instance (its storage connections): the service outlives the run."""
        if "instance" in self.__dict__:
            self.instance.dispose()

    def run_finished(self) -> bool:
        run = self.instance.get_run_by_id(self.run_id)
        return run is None or run.is_finished

    def taken_up_by(self, service_pid: int) -> None:
        """A new supervision service took the run from its spool: say so on the run (tag + event)."""
        self.instance.add_run_tags(self.run_id, {SUPERVISOR_PID_TAG: str(service_pid)})
        self._engine_event(f"The E2B supervision service (pid {service_pid}) took the run up from its spool")

    def cancel(self) -> None:
        self._cancel.set()

    def _cancel_requested(self) -> bool:
        if not self._cancel.is_set() and self.files.cancel.exists():
            self._cancel.set()
        return self._cancel.is_set()

    def run(self, resume: bool = False) -> int:
        sandbox: Sandbox | None = None
        log.info("supervisor up %d ms after launch_run%s", self._since_launch(), " (resuming)" if resume else "")
        try:
            if resume:
                sandbox = self._reattach()
                if sandbox is not None:
                    self._follow(sandbox, None)
            else:
                sandbox = self._start()
        except Exception as error:  # reported on the run; the sandbox is still killed below
            log.exception("supervisor failed")
            self._outcome.error = self._outcome.error or mask_text(f"{type(error).__name__}: {error}")
        finally:
            if self._lease is not None:
                self._lease.stop()
            if self._before_dagster is not None:  # everything below uses Dagster
                self._before_dagster()
            sandbox = sandbox or self._sandbox
            if sandbox is not None:
                self._kill(sandbox)
            self._top_up_pool()
            self._record_session()
            self._finish_host_run()
            self._prepare_instance_template()
            self._prune_run_folders()
        return 0

    def _prune_run_folders(self) -> None:
        """Each run that ends deletes the host folders of runs past their retention (`prune_run_folders`)."""
        from osiris_dagster.remote.run_files import prune_run_folders

        def finished(run_id: str) -> bool:
            run = self.instance.get_run_by_id(run_id)
            return run is None or run.is_finished

        try:
            pruned = prune_run_folders(self.files.root.parent, finished)
        except Exception as error:  # housekeeping never fails a run
            log.warning("pruning run folders: %s", mask_text(str(error)))
            return
        if pruned:
            log.info("pruned the host folders of %d finished run(s)", len(pruned))

    def _start(self) -> Sandbox | None:
        self._needs = self._job_needs()
        log.info("job needs known %d ms after launch_run", self._since_launch())
        sandbox = self._claim_sandbox() or self._create_sandbox()
        self._sandbox = sandbox
        self._lease = SandboxLease(sandbox, self.settings.sandbox_timeout_s).start()
        self._save_state()
        handle = None if self._cancel_requested() else self._start_worker(sandbox)
        # Dagster is first needed here; importing it now overlaps the worker's start-up.
        self.instance.add_run_tags(self.run_id, {SANDBOX_ID_TAG: sandbox.sandbox_id})
        log.info("host instance ready %d ms after launch_run", self._since_launch())
        claimed = self._outcome.claimed
        if claimed is not None:
            self._engine_event(
                f"Sandbox {sandbox.sandbox_id} claimed from the warm pool {claimed['pool']!r} "
                f"({claimed['duration_ms']} ms, {'warm worker' if claimed['warm'] else 'cold worker'})"
            )
        else:
            self._engine_event(f"Sandbox {sandbox.sandbox_id} created ({self._outcome.create_ms} ms)")
        if handle is not None:
            self._follow(sandbox, handle)
        return sandbox

    def _reattach(self) -> Sandbox | None:
        """Resume after a lost supervisor: the sandbox and worker of the state file, or a clear failure."""
        if self.files.state.exists():
            self._outcome = _Outcome.from_json(json.loads(self.files.state.read_text(encoding="utf-8")))
        outcome = self._outcome
        if outcome.sandbox_id is None or outcome.worker_pid is None:
            outcome.error = (
                "the host-side supervisor was lost before the sandbox's worker had started, so there is nothing "
                "to resume; launch the run again"
            )
            return None
        try:
            sandbox = Sandbox.connect(outcome.sandbox_id, **self.settings.sdk_kwargs(self.environ))
        except Exception as error:
            outcome.error = mask_text(
                f"the sandbox {outcome.sandbox_id} is gone (killed or expired) and cannot be resumed after the "
                f"host-side supervisor was lost: {type(error).__name__}: {error}"
            )
            return None
        self._sandbox = sandbox
        self._lease = SandboxLease(sandbox, self.settings.sandbox_timeout_s).start()
        self._engine_event(f"Reattached to sandbox {sandbox.sandbox_id} (worker pid {outcome.worker_pid})")
        return sandbox

    def _save_state(self) -> None:
        """What a resuming supervisor needs: sandbox, worker pid, what was learnt (0600, atomic)."""
        temp = self.files.state.with_name(self.files.state.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self._outcome.to_json(), handle)
        os.replace(temp, self.files.state)

    def _job_needs(self) -> Any:
        if self.spec.needs is not None:  # names from the spec; values sent with the hand-over
            env = {name: self.environ[name] for name in self.spec.needs["env_names"] if name in self.environ}
            for name in self.spec.needs["secret_env_names"]:
                if name in env:
                    register_secret(env[name])
            return _Needs(env=env, modules=tuple(self.spec.needs["modules"]))
        from osiris_dagster.remote.job_needs import job_needs
        from osiris_dagster.remote.run_selection import load_selection

        needs = job_needs(
            self.project,
            load_selection(self.project, self.spec.step_ids),
            self.spec.run_params,
            passthrough=self.settings.env_passthrough,
            extra_modules=self.settings.preflight_modules,
            environ=self.environ,
        )
        for name, value in needs.env.items():
            if is_secret_key(name):
                register_secret(value)
        return needs

    def _claim_sandbox(self) -> Sandbox | None:
        """An idle sandbox of the warm pool (`pool.size` > 0), claimed for this run only."""
        if self.settings.pool_size <= 0:
            return None
        from osiris_dagster.remote.sandbox_pool import SandboxPool

        self._pool = SandboxPool(self.settings, lock_dir=self.files.root.parent)
        try:
            claimed = self._pool.claim(self.run_id)
        except Exception as error:  # the pool is an optimisation: fall back to a fresh sandbox
            log.warning("could not claim a pooled sandbox: %s", mask_text(str(error)))
            return None
        finally:
            self._claimed_at = time.time()
        if claimed is None:
            log.info("no idle sandbox in pool %r: creating one", self.settings.pool_name)
            return None
        self._pool_code = claimed.code_hash
        self._outcome.sandbox_id = claimed.sandbox.sandbox_id
        self._outcome.claimed = {"pool": self.settings.pool_name, "duration_ms": claimed.duration_ms, "warm": False}
        return claimed.sandbox

    def _top_up_pool(self) -> None:
        """Start the pool's detached top-up (once; the run never waits for it)."""
        if self._pool is None or self._topped_up:
            return
        self._topped_up = True
        try:
            self._pool.start_fill_detached(self.files.root.parent / "pool.log", claimed_at=self._claimed_at)
        except Exception as error:
            log.warning("could not start the pool top-up: %s", mask_text(str(error)))

    def _prepare_instance_template(self) -> None:
        """After the run (never on its critical path): the empty instance later bundles carry."""
        from osiris_dagster.remote.bundle import ensure_instance_template

        try:
            ensure_instance_template(self.files.root.parent)
        except Exception as error:  # an optimisation only
            log.warning("could not prepare the sandbox instance template: %s", mask_text(str(error)))

    def _create_sandbox(self) -> Sandbox:
        started = time.perf_counter()
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.create_attempts) | stop_after_delay(self.settings.create_budget_s),
            wait=wait_random_exponential(multiplier=0.25, max=8),
            retry=retry_if_exception(_is_transient),
            reraise=True,
            before_sleep=lambda state: log.warning("sandbox create failed, retrying: %s", state.outcome.exception()),
        )
        sandbox = retrying(
            Sandbox.create,
            template=self.settings.template,
            timeout=self.settings.sandbox_timeout_s,
            metadata=self.spec.sandbox_metadata or {SANDBOX_METADATA_RUN_ID: self.run_id},
            envs=self._needs.env,
            **self.settings.sdk_kwargs(self.environ),
        )
        self._outcome.sandbox_id = sandbox.sandbox_id
        self._outcome.create_ms = int((time.perf_counter() - started) * 1000)
        log.info("sandbox %s created in %d ms", sandbox.sandbox_id, self._outcome.create_ms)
        return sandbox

    def _start_worker(self, sandbox: Sandbox) -> Any:
        from osiris_dagster.remote.bundle import (
            BUNDLE_NAME,
            SANDBOX_DIR,
            build_bundle,
            code_hash,
            instance_template_dir,
        )
        from osiris_dagster.remote.sandbox_pool import WARM_CLIENT

        # A pooled sandbox filled with this very code has it imported in its warm worker.
        warm = self._outcome.claimed is not None and self._pool_code == code_hash()
        wheel_dir = Path(self.settings.wheel_dir) if self.settings.install_deps and self.settings.wheel_dir else None
        # A cold worker gets the empty instance ready-made (the warm worker created its own).
        template = instance_template_dir(self.files.root.parent)
        template = template if not warm and template.is_dir() else None
        bundle = build_bundle(
            self.project, self.spec.payload, wheel_dir, include_code=not warm, instance_template=template
        )
        _transfer(sandbox.files.write, f"{SANDBOX_DIR}/{BUNDLE_NAME}", bundle)
        # `job_needs` (and with it the product's spec stack, ~14 MB and 0.2-0.3 s of imports) only
        # for an older launcher's spec or install_deps: the service need not carry it otherwise.
        versions = self.spec.versions
        if versions is None:
            from osiris_dagster.remote.job_needs import host_versions

            versions = host_versions()
        install = None
        if self.settings.install_deps:
            from osiris_dagster.remote.job_needs import requirements_for

            install = {"requirements": requirements_for(self._needs.modules), "pip_args": list(self.settings.pip_args)}
        worker_spec = {
            "modules": list(self._needs.modules),
            "install": install,
            "versions": versions,  # the worker refuses to run on a different Dagster / product
            "host_project_dir": str(self.project.root),  # where the run's files land: dagster/uri names it
        }
        python = shlex.quote(self.settings.python)
        # The warm client hands its stream and environment to the warm worker (or becomes a cold one).
        start = f"{python} -I -S {WARM_CLIENT}" if warm else f"{python} -m {WORKER_MODULE}"
        command = (
            f"tar xzf {BUNDLE_NAME} && mkdir -p deps && "
            'PYTHONPATH="$PWD/code:$PWD/deps" DAGSTER_HOME="$PWD/dagster_home" OSIRIS_PROJECT_DIR="$PWD/project" '
            f"exec {start}"
        )
        envs = {"OSIRIS_WORKER_SPEC": json.dumps(worker_spec), "OSIRIS_SANDBOX_ID": sandbox.sandbox_id}
        if self._outcome.claimed is not None:
            # A pooled sandbox was created before the run: its variables come with the command.
            self._outcome.claimed["warm"] = warm
            envs = {**self._needs.env, **envs}
        # The sync SDK ignores on_stdout/on_stderr for background commands: they go to wait().
        handle = sandbox.commands.run(
            command, background=True, timeout=0, cwd=SANDBOX_DIR, envs=envs, retain_output=False
        )
        self._outcome.worker_pid = handle.pid
        self._save_state()
        how = "warm" if warm else "cold"
        if self._outcome.claimed is not None and not warm:
            how += f": the pooled sandbox holds code {self._pool_code}, this run's is {code_hash()}"
        log.info(
            "worker started in sandbox %s (%s) %d ms after launch_run", sandbox.sandbox_id, how, self._since_launch()
        )
        return handle

    def _follow(self, sandbox: Sandbox, handle: Any) -> None:
        """Relay the worker's lines until it exits (or a cancel times out), then fetch results.

        ``handle`` is None when resuming: the stream is reattached by pid and the durable log read
        from the stored cursor.
        """
        from osiris_dagster.remote.bundle import SANDBOX_DIR
        from osiris_dagster.remote.event_relay import EventRelay

        relay = EventRelay(
            self.instance,
            self.run_id,
            self.files.relay_cursor,
            on_control=self._on_control,
            read_log=lambda: self._read_log(sandbox),
        )
        self._relay = relay
        if handle is None:
            relay.reconcile()
        stderr = _StderrTail()
        stream = threading.Thread(
            target=inherit(self._stream), args=(sandbox, handle, relay, stderr), name="sandbox-stream", daemon=True
        )
        stream.start()
        cancel_deadline: float | None = None
        while stream.is_alive():
            if cancel_deadline is None and self._cancel_requested():
                cancel_deadline = time.monotonic() + self.settings.cancel_grace_s
                self._request_cancel(sandbox)
            if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                log.warning("worker ignored the cancel for %.0f s; killing the sandbox", self.settings.cancel_grace_s)
                break
            stream.join(0.1)
        self._outcome.stderr_tail = stderr.lines
        if self._outcome.result is not None and not self._cancel_timed_out(cancel_deadline):
            try:
                self._download(sandbox, f"{SANDBOX_DIR}/{self._outcome.result['name']}")
            except Exception as error:
                log.exception("copying the results back failed")
                self._outcome.error = mask_text(
                    f"copying the run's results back from the sandbox failed: {type(error).__name__}: {error}"
                )

    @staticmethod
    def _cancel_timed_out(deadline: float | None) -> bool:
        return deadline is not None and time.monotonic() > deadline

    def _read_log(self, sandbox: Sandbox) -> str:
        from osiris_dagster.remote.bundle import SANDBOX_DIR

        data = _transfer(sandbox.files.read, f"{SANDBOX_DIR}/{protocol.DURABLE_LOG}", format="bytes")
        return bytes(data).decode("utf-8", errors="replace")

    def _stream(self, sandbox: Sandbox, handle: Any, relay: Any, stderr: _StderrTail) -> None:
        """Follow the worker's stdout until it exits; a dropped stream is reattached, not fatal.

        A network reset between host and sandbox ends ``wait()`` with an exception that says
        nothing about the sandbox: it is taken as "the sandbox died" only if the sandbox says so
        (`_sandbox_gone`). Otherwise the stream is reattached by pid (`commands.connect`) and the
        lines printed meanwhile are read from the durable log (`EventRelay.catch_up`).
        """
        pid = self._outcome.worker_pid
        give_up_at: float | None = None
        while True:
            try:
                if handle is None:
                    # Attach first, then read the log: no line can fall between the two (the
                    # stream's lines already read from the log are skipped by their numbers).
                    handle = sandbox.commands.connect(pid, timeout=0)
                    relay.reconnected()
                    log.info("reattached to the worker's stream (pid %s)", pid)
                    relay.catch_up()  # lines printed while nobody listened (and, at a resume, all since the cursor)
                result = handle.wait(on_stdout=relay.feed, on_stderr=stderr.feed)
                self._stream_ended(relay)
                self._outcome.exit_code = result.exit_code
                return
            except CommandExitException as exit_:
                self._stream_ended(relay)
                self._outcome.exit_code = exit_.exit_code
                return
            except Exception as error:
                handle = None
                if relay.exit_code is not None:  # the worker said how it ended; the stream's end is moot
                    self._outcome.exit_code = relay.exit_code
                    return
                gone = self._sandbox_gone(sandbox)
                if gone:
                    self._outcome.error = mask_text(f"the sandbox stopped during the run: {gone}")
                    return
                if not self._worker_running(sandbox, pid):
                    try:
                        relay.catch_up()
                    except Exception as catch_up_error:
                        log.warning("reading the durable log: %s", mask_text(str(catch_up_error)))
                    if relay.exit_code is not None:
                        self._outcome.exit_code = relay.exit_code
                        return
                    self._outcome.error = (
                        "the sandbox's worker process ended without reporting how (killed inside the sandbox?)"
                    )
                    return
                now = time.monotonic()
                give_up_at = give_up_at or now + _RECONNECT_BUDGET_S
                if now > give_up_at:
                    self._outcome.error = mask_text(
                        f"lost the worker's stream and could not reattach for {_RECONNECT_BUDGET_S:.0f} s: "
                        f"{type(error).__name__}: {error}"
                    )
                    return
                log.warning(
                    "the worker's stream dropped (%s); reattaching", mask_text(f"{type(error).__name__}: {error}")
                )
                time.sleep(0.2)
                continue

    @staticmethod
    def _stream_ended(relay: Any) -> None:
        """The worker exited: whatever its stream did not deliver (no `exit` line yet) is in the log."""
        relay.close()
        if relay.exit_code is None:
            relay.catch_up()

    def _sandbox_gone(self, sandbox: Sandbox) -> str | None:
        """Why the sandbox is gone, or None if it is running or cannot be told apart from a blip."""
        for attempt in range(3):
            try:
                if sandbox.is_running(request_timeout=5):
                    return None
                if attempt == 2:
                    return f"sandbox {sandbox.sandbox_id} is not running (killed or expired)"
            except NotFoundException as error:
                return f"sandbox {sandbox.sandbox_id} not found ({error})"
            except Exception:  # the check's own connection dropped: not an answer
                if attempt == 2:
                    return None
            time.sleep(0.3)
        return None

    @staticmethod
    def _worker_running(sandbox: Sandbox, pid: int | None) -> bool:
        """Is the worker's command still listed in the sandbox? (True when the list itself fails.)"""
        try:
            return any(process.pid == pid for process in sandbox.commands.list(request_timeout=5))
        except Exception:
            return True

    def _on_control(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == protocol.PREFLIGHT:
            self._outcome.preflight = payload
        elif kind == protocol.INSTALLED:
            self._outcome.installed = payload
        elif kind == protocol.STARTED:
            self._outcome.overhead_ms = int((time.time() - self.spec.launched_at) * 1000)
            log.info("the sandbox's run starts %d ms after launch_run", self._outcome.overhead_ms)
            if self.settings.backend != "local":  # local sandboxes share the host's CPUs: after the run
                self._top_up_pool()  # the run is under way: its replacement may start now
        elif kind == protocol.RESULT:
            self._outcome.result = payload
        self._save_state()

    def _request_cancel(self, sandbox: Sandbox) -> None:
        from osiris_dagster.remote.bundle import SANDBOX_DIR
        from osiris_dagster.remote.worker import PID_FILE

        log.info("cancel requested: asking the worker to stop the run")
        try:
            sandbox.commands.run(f"kill -TERM $(cat {PID_FILE})", cwd=SANDBOX_DIR, timeout=10)
        except Exception as error:
            log.warning("could not signal the worker: %s", mask_text(str(error)))

    def _download(self, sandbox: Sandbox, path: str) -> None:
        from osiris_dagster.remote.compute_logs import store_compute_logs
        from osiris_dagster.remote.result_archive import unpack_result

        started = time.perf_counter()
        data = bytes(_transfer(sandbox.files.read, path, format="bytes"))
        unpacked = unpack_result(data, self.project.root)
        store_compute_logs(self.instance, self.run_id, unpacked.compute_logs)
        elapsed = int((time.perf_counter() - started) * 1000)
        self._outcome.download = {"files": unpacked.files, "bytes": unpacked.bytes, "duration_ms": elapsed}

    def _kill(self, sandbox: Sandbox) -> None:
        """Kill the sandbox; "killed" is recorded only when the service confirmed it (else the reaper retries)."""
        outcome = kill_sandbox(sandbox.sandbox_id, self.settings.sdk_kwargs(self.environ))
        self._outcome.kill_confirmed = outcome.confirmed
        if not outcome.confirmed:
            log.warning("%s", outcome.message)
        self._engine_event(outcome.message)

    # -- the host's records ----------------------------------------------------------
    def _record_session(self) -> None:
        """Append the remote-only events and metrics (the schema's `x-remote-only` names)."""
        from osiris_dagster.session.session_log import SessionLog

        outcome = self._outcome
        if outcome.sandbox_id is None or outcome.session_recorded:
            return
        session = SessionLog(self.project.session_dir(self.run_id))
        if outcome.claimed is not None:
            session.event("sandbox_claimed", sandbox_id=outcome.sandbox_id, **outcome.claimed)
        else:
            session.event(
                "sandbox_created",
                sandbox_id=outcome.sandbox_id,
                template=self.settings.template or "base",
                duration_ms=outcome.create_ms,
            )
        if outcome.preflight is not None:
            session.event("dependency_check", **outcome.preflight)
        if outcome.installed is not None:
            session.event("dependency_installed", **outcome.installed)
        if outcome.overhead_ms is not None:
            session.metric("e2b_overhead_ms", outcome.overhead_ms)
        if outcome.download is not None:
            session.event("artifacts_downloaded", **outcome.download)
            session.metric("artifacts_copy_ms", outcome.download["duration_ms"])
            session.metric("artifacts_files_total", outcome.download["files"])
            session.metric("artifacts_bytes_total", outcome.download["bytes"])
        if outcome.kill_confirmed:
            session.event("sandbox_killed", sandbox_id=outcome.sandbox_id)
        if not session.status_file.exists():
            self._write_failed_status(session)
        outcome.session_recorded = True
        self._save_state()

    def _write_failed_status(self, session: Any) -> None:
        """A run that never started in the sandbox still leaves a status.json saying why."""
        from datetime import UTC, datetime

        run = self.instance.get_run_by_id(self.run_id)
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        session.write_status(
            {
                "session": session.session,
                "run_id": self.run_id,
                "pipeline": run.tags.get("osiris/pipeline", run.job_name) if run else "",
                "job": run.job_name if run else "",
                "ok": False,
                "exit_code": 1,
                "reason": self._failure_message(),
                "steps_total": 0,
                "steps_completed": 0,
                "steps_failed": [],
                "sandbox_id": self._outcome.sandbox_id,
                "started_at": datetime.fromtimestamp(self.spec.launched_at, UTC).isoformat().replace("+00:00", "Z"),
                "finished_at": now,
                "duration_ms": int((time.time() - self.spec.launched_at) * 1000),
            }
        )

    def _failure_message(self) -> str:
        outcome = self._outcome
        missing = (outcome.installed or {}).get("still_missing") or (outcome.preflight or {}).get("missing")
        if outcome.exit_code == 3 and missing:
            return (
                f"the sandbox's Python lacks the module(s) {', '.join(missing)}. Fix: use a template that has them "
                "(run_launcher.config.template; `osiris-dagster e2b template build`), or set "
                "run_launcher.config.install_deps: true (with wheel_dir for offline installs)."
            )
        if outcome.error:
            return outcome.error
        tail = "\n".join(outcome.stderr_tail[-15:])
        return f"the sandbox worker exited with code {outcome.exit_code} before the run finished" + (
            f"; last stderr lines:\n{tail}" if tail else ""
        )

    def _finish_host_run(self) -> None:
        """End the host run — only now, with the results in the project (the terminal event was held)."""
        from dagster._core.events import DagsterEventType

        relay = self._relay
        if relay is not None:
            try:  # a stream the cancel gave up on may still have events waiting to be written
                relay.flush()
            except Exception as error:
                log.warning("storing the last relayed events failed: %s", mask_text(str(error)))
        run = self.instance.get_run_by_id(self.run_id)
        if run is None or run.is_finished:
            return
        held = relay.held[1].event_type if relay is not None and relay.held is not None else None
        copied = self._outcome.download is not None and not self._outcome.error
        if held is not None and (held != DagsterEventType.RUN_SUCCESS or copied):
            relay.release_held()
            return
        if self._cancel.is_set():
            self.instance.report_run_canceled(run, "Canceled: the sandbox was stopped.")
        else:
            self.instance.report_run_failed(run, mask_text(self._failure_message()))

    def _engine_event(self, message: str) -> None:
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None:
            # What ``report_engine_event(cls=E2BRunLauncher)`` writes (it only prefixes the class's
            # name), without importing the launcher, and with it the spec stack, into the service.
            self.instance.report_engine_event(f"[{LAUNCHER_NAME}] {message}", run)


def main(argv: list[str]) -> int:
    """One run in this process (debugging); its stdout/stderr are the run's log."""
    files = RunFiles(Path(argv[0]))
    sys.stdout = MaskedStream(sys.stdout)  # type: ignore[assignment]
    sys.stderr = MaskedStream(sys.stderr)  # type: ignore[assignment]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    log.setLevel(logging.INFO)
    lock = RunLock.try_acquire(files.supervision_lock)
    if lock is None:
        log.error("run %s is already supervised (its supervision lock is held)", files.root.name)
        return 1
    supervisor = RunSupervisor(RunSpec.read(files.spec), files)
    signal.signal(signal.SIGTERM, lambda signum, frame: supervisor.cancel())
    try:
        return supervisor.run(resume="--resume" in argv[1:])
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
