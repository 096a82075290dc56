"""`E2BRunLauncher`: every Dagster run in its own E2B sandbox, seen by the host as a local run.

Configured only through ``dagster.yaml``::

    run_launcher:
      module: osiris_dagster.remote.launcher
      class: E2BRunLauncher
      config: {backend: local, python: python3, env_passthrough: [TZ]}

`launch_run` returns at once: it writes the run's supervisor spec and hands the run to the
supervision service of this DAGSTER_HOME (`supervision_client.hand_over`; one detached process
serving every run, started on demand), whose `RunSupervisor` thread does the sandbox work and
relays the run's events into this instance. Modelled on dagster-docker's launcher: the run is
tagged (``e2b/supervisor_pid`` = the service's pid, then ``e2b/sandbox_id``) and every step of
the launch is an engine event. Whether a run is supervised is its supervision lock (`run_lock`),
not a pid. The E2B key is read from the environment, never from the config.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from dagster import Array, Bool, Field, Float, Int, Noneable, Shape, StringSource, serialize_value
from dagster import _check as check
from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    ResumeRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from osiris_dagster.project import PROJECT_DIR_ENV, ProjectLayout
from osiris_dagster.remote import run_lock, supervision_client
from osiris_dagster.remote.job_needs import host_versions, job_needs, loopback_connections, writes_outside_project
from osiris_dagster.remote.run_files import RunFiles
from osiris_dagster.remote.run_selection import SelectedPipeline, load_selection, plan_step_ids
from osiris_dagster.remote.sandbox_lease import kill_sandbox
from osiris_dagster.remote.sandbox_reaper import sandbox_metadata
from osiris_dagster.remote.settings import SDK_ENV, SandboxSettings
from osiris_dagster.remote.supervision_client import hand_over
from osiris_dagster.remote.tags import SANDBOX_ID_TAG, SUPERVISOR_PID_TAG
from osiris_dagster.secrets import is_secret_key, mask_text, registered_secrets


class E2BRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, inst_data: ConfigurableClassData | None = None, **config: Any) -> None:
        self._inst_data = inst_data
        self.settings = SandboxSettings.from_config(config)
        super().__init__()

    def register_instance(self, instance: Any) -> None:
        """Dagster loads the launcher here (before the first launch it makes): start the service now.

        The service started here stays up while this process lives (`supervision_client.prewarm`),
        e2b SDK and Dagster imported, for the runs to come. The daemon loads the launcher at its
        first launch (or run it monitors), a code server at every reaper evaluation (every 30 s),
        `dagster job launch` just before its launch. Off with ``supervision_prewarm: false``.
        """
        super().register_instance(instance)
        if not self.settings.supervision_prewarm or supervision_client.IN_SERVICE:
            return
        try:
            supervision_client.prewarm(instance.root_directory, self.settings.supervision_idle_s)
        except OSError as error:  # an optimisation: the first launch starts the service otherwise
            logging.getLogger(__name__).warning("could not start the E2B supervision service: %s", error)

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "backend": Field(
                str, default_value="e2b", description="'e2b' (E2B cloud) or 'local' (local sandbox server)"
            ),
            "template": Field(Noneable(StringSource), is_required=False, description="E2B template name or id"),
            "sandbox_timeout_s": Field(Int, default_value=3600, description="Sandbox lifetime cap, seconds"),
            "cpu_count": Field(Noneable(Int), is_required=False, description="vCPUs (template build)"),
            "memory_mb": Field(Noneable(Int), is_required=False, description="Memory in MB (template build)"),
            "env_passthrough": Field(Array(str), default_value=[], description="Extra host env var names to pass"),
            "install_deps": Field(Bool, default_value=False, description="pip-install missing modules in the sandbox"),
            "wheel_dir": Field(Noneable(StringSource), is_required=False, description="Host dir of wheels to install"),
            "pip_args": Field(Array(str), default_value=[], description="Extra pip arguments for install_deps"),
            "python": Field(StringSource, default_value="python3", description="Interpreter inside the sandbox"),
            "preflight_modules": Field(Array(str), default_value=[], description="Extra modules the run needs"),
            "server_url": Field(
                Noneable(StringSource), is_required=False, description="backend local: the sandbox server's URL"
            ),
            # Deprecated by e2b 2.63: still in the schema so the launcher can refuse them naming server_url.
            "api_url": Field(Noneable(StringSource), is_required=False, description="refused: use server_url"),
            "sandbox_url": Field(Noneable(StringSource), is_required=False, description="refused: use server_url"),
            "domain": Field(Noneable(StringSource), is_required=False, description="backend e2b: E2B domain"),
            "create_attempts": Field(Int, default_value=10, description="Sandbox create attempts (transient errors)"),
            "create_budget_s": Field(
                Float, default_value=120.0, description="Give up creating a sandbox after this many seconds of retries"
            ),
            "supervision_idle_s": Field(
                Float,
                default_value=60.0,
                description="The supervision service exits after this many seconds without a run "
                "(and without a live process that loaded this launcher, see supervision_prewarm)",
            ),
            "supervision_prewarm": Field(
                Bool,
                default_value=True,
                description="Start the supervision service when the launcher is loaded, and keep it up "
                "while the loading process (daemon, webserver, code server) lives",
            ),
            "pool": Field(
                Shape(
                    {
                        "size": Field(Int, default_value=0, description="Idle sandboxes kept ready (0: no pool)"),
                        "idle_ttl_s": Field(Int, default_value=600, description="An idle sandbox expires after this"),
                        "name": Field(str, default_value="default", description="Pool name (sandbox metadata)"),
                    }
                ),
                is_required=False,
                description="Warm pool: N created, dependency-checked, idle sandboxes; each serves one run only",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, **config_value)

    # -- launching -------------------------------------------------------------------
    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        self.settings.sdk_kwargs()  # fail the launch now, with an actionable message, if unconfigured
        _refuse_default_template(self.settings)
        instance = self._instance
        plan_snapshot = instance.get_execution_plan_snapshot(check.not_none(run.execution_plan_snapshot_id))
        # The steps this run executes, by pipeline: a run of `__ASSET_JOB` (the UI's Materialize) has no
        # pipeline's name, so every check below goes by the plan, not by the job's name.
        step_ids = plan_step_ids(plan_snapshot, run.job_name)
        project = ProjectLayout.discover(_project_dir(run))
        selection = _load_selection(project, step_ids)
        _refuse_incremental_steps(selection)
        _refuse_writes_outside_project(run, project, selection)
        if self.settings.backend == "e2b":
            _refuse_loopback_connections(run, project, selection)
        files = RunFiles.for_run(instance.root_directory, run.run_id)
        files.root.mkdir(parents=True, exist_ok=True)
        spec = {
            "run_id": run.run_id,
            "job_name": run.job_name,
            "step_ids": step_ids,
            "run_params": _run_params(run.run_config),
            "payload": {
                "run": serialize_value(run),
                "job_snapshot": serialize_value(instance.get_job_snapshot(check.not_none(run.job_snapshot_id))),
                "plan_snapshot": serialize_value(plan_snapshot),
            },
            "settings": self.settings.to_json(),
            "instance_ref": serialize_value(instance.get_ref()),
            "project_dir": str(project.root),
            "needs": _needs_spec(run, project, selection, self.settings),
            "sandbox_metadata": sandbox_metadata(run.run_id, instance.run_storage.get_run_storage_id()),
            # Read here, where the spec stack is loaded anyway: the supervision service need not load it.
            "versions": host_versions(),
            "launched_at": time.time(),
        }
        fd = os.open(files.spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(spec, handle)
        pid = self._hand_over(files, spec["needs"], resume=False)
        self._instance.add_run_tags(run.run_id, {SUPERVISOR_PID_TAG: str(pid)})
        self._instance.report_engine_event(
            f"Handed the run to the E2B supervision service (pid {pid}, backend {self.settings.backend})",
            run,
            cls=self.__class__,
        )

    def _hand_over(self, files: RunFiles, needs: dict[str, list[str]] | None, *, resume: bool) -> int:
        """Give the run to the service; the values of its variables come from THIS process's environment.

        The SDK's own settings (API key, domain, server URL) travel too: the service takes them from
        the launching process only (`settings.SDK_ENV`).
        """
        names = [*(needs or {}).get("env_names", []), *SDK_ENV]
        env = {name: os.environ[name] for name in names if name in os.environ}
        return hand_over(
            self._instance.root_directory,
            files.root,
            resume=resume,
            env=env,
            idle_s=self.settings.supervision_idle_s,
        )

    # -- resume (run monitoring) ------------------------------------------------------
    @property
    def supports_resume_run(self) -> bool:
        return True

    def resume_run(self, context: ResumeRunContext) -> None:
        """Supervise again a run whose supervision was lost: the new supervisor reattaches to the sandbox.

        Called by run monitoring (``run_monitoring: {enabled: true, max_resume_run_attempts: N}``)
        when `check_run_worker_health` finds the run unsupervised (its service died). The run is
        handed to the service (a new one if need be) with ``resume``; the new supervisor reads the
        sandbox id and worker pid from the run's state file, reattaches to the worker's command and
        relays the durable log from the stored cursor; if the sandbox is gone the run fails saying so.
        """
        run = context.dagster_run
        files = RunFiles.for_run(self._instance.root_directory, run.run_id)
        if not files.spec.exists():
            raise RuntimeError(f"E2BRunLauncher: no supervisor spec for run {run.run_id} at {files.spec}")
        needs = json.loads(files.spec.read_text(encoding="utf-8")).get("needs")
        pid = self._hand_over(files, needs, resume=True)
        self._instance.add_run_tags(run.run_id, {SUPERVISOR_PID_TAG: str(pid)})
        self._instance.report_engine_event(
            f"Handed the run to the E2B supervision service (pid {pid}) to resume it "
            f"(attempt {context.resume_attempt_number})",
            run,
            cls=self.__class__,
        )

    # -- cancel ---------------------------------------------------------------------
    def terminate(self, run_id: str) -> bool:
        """Cancel a running run; for a finished run, kill its sandbox if one is left (any state)."""
        run = self._instance.get_run_by_id(run_id)
        if run is None:
            return False
        if run.is_finished:
            return self._kill_sandbox(run)
        self._instance.report_run_canceling(run)
        files = RunFiles.for_run(self._instance.root_directory, run.run_id)
        if files.root.is_dir():
            files.cancel.touch()  # read by the run's supervisor, also one started later to resume
        if run_lock.is_held(files.supervision_lock):
            self._instance.report_engine_event(
                "Asked the E2B run supervisor to cancel the run", run, cls=self.__class__
            )
            return True
        # No supervisor (it died): kill the sandbox ourselves and end the run here.
        self._kill_sandbox(run)
        self._instance.report_run_canceled(run, "Canceled: the run's supervisor was not running.")
        return True

    def _kill_sandbox(self, run: DagsterRun) -> bool:
        """Kill the run's sandbox; True only when the service confirmed it is gone."""
        sandbox_id = run.tags.get(SANDBOX_ID_TAG)
        if not sandbox_id:
            return False
        outcome = kill_sandbox(sandbox_id, self.settings.sdk_kwargs())
        self._instance.report_engine_event(outcome.message, run, cls=self.__class__)
        return outcome.confirmed

    # -- run monitoring -------------------------------------------------------------
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """RUNNING while the run's supervision lock is held (by a live service thread), else why not."""
        pid = _supervisor_pid(run)
        worker_id = run.tags.get(SANDBOX_ID_TAG) or (str(pid) if pid else None)
        files = RunFiles.for_run(self._instance.root_directory, run.run_id)
        if run_lock.is_held(files.supervision_lock):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=worker_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no e2b/supervisor_pid tag", run_worker_id=worker_id)
        run = self._instance.get_run_by_id(run.run_id) or run
        if run.is_finished:
            return CheckRunHealthResult(WorkerStatus.SUCCESS, run_worker_id=worker_id)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"E2B run supervisor (service pid {pid}) is gone; last log lines:\n{files.log_tail(10)}",
            run_worker_id=worker_id,
        )

    def get_run_worker_debug_info(self, run: DagsterRun, include_container_logs: bool | None = True) -> str | None:
        files = RunFiles.for_run(self._instance.root_directory, run.run_id)
        lines = [
            f"supervisor pid: {run.tags.get(SUPERVISOR_PID_TAG)}",
            f"sandbox id: {run.tags.get(SANDBOX_ID_TAG)}",
            f"supervisor log: {files.log}",
        ]
        if include_container_logs:
            lines += ["last log lines:", files.log_tail()]
        return mask_text("\n".join(lines))


def _project_dir(run: DagsterRun) -> Path:
    """The project folder the run's code location was loaded from (where its files belong).

    An absolute working directory in the run's origin wins. A relative one (``working_directory:
    .`` in workspace.yaml is stored as written) is relative to where Dagster was started, unless
    `$OSIRIS_PROJECT_DIR` names the project, as it does for every other entry point.
    """
    origin = run.job_code_origin
    working_directory = getattr(origin.repository_origin.code_pointer, "working_directory", None) if origin else None
    if working_directory and os.path.isabs(working_directory):
        return Path(working_directory).resolve()
    base = os.environ.get(PROJECT_DIR_ENV) or os.getcwd()
    return Path(base, working_directory if working_directory and not os.environ.get(PROJECT_DIR_ENV) else "").resolve()


def _refuse_default_template(settings: SandboxSettings) -> None:
    """E2B's default template ``base`` has no Dagster: fail the launch now, not in the sandbox."""
    if settings.backend == "e2b" and not settings.template and not settings.install_deps:
        raise RuntimeError(
            "E2BRunLauncher: no run_launcher.config.template is set, so the sandbox would use E2B's default "
            "template 'base', which has no Dagster. Build the product's template once with "
            "`osiris-dagster e2b template build --name osiris-dagster` (needs E2B_API_KEY), then set "
            "run_launcher.config.template: osiris-dagster"
        )


def _load_selection(project: ProjectLayout, step_ids: Mapping[str, list[str]]) -> list[SelectedPipeline] | None:
    """The run's pipelines and steps, loaded once for every check; None if the project does not load.

    A project that does not load fails the run in the sandbox, with the same message as locally.
    """
    try:
        return load_selection(project, step_ids)
    except Exception:
        return None


def _refuse_loopback_connections(
    run: DagsterRun, project: ProjectLayout, selection: list[SelectedPipeline] | None
) -> None:
    """In E2B's cloud, 127.0.0.1/localhost is the sandbox itself: fail the launch, naming the connection."""

    if selection is None:
        return
    try:
        found = loopback_connections(project, selection, _run_params(run.run_config), os.environ)
    except Exception:  # a broken pipeline fails in the sandbox with its own message
        return
    if found:
        listed = ", ".join(f"{reference} (host {host})" for reference, host in found)
        raise RuntimeError(
            f"E2BRunLauncher: {listed}: a loopback host inside an E2B sandbox is the sandbox itself, not this "
            "machine. Point the connection at an address the sandbox can reach over the internet (set the "
            "profile's host, or the variable it reads, e.g. MYSQL_HOST), or run this job with the default "
            "run launcher. See docs/remote-runs.md, 'Cloud backend: reachable hosts'."
        )


def _refuse_incremental_steps(selection: list[SelectedPipeline] | None) -> None:
    """Fail the launch of a run with incremental steps, rather than run it wrong.

    An incremental step continues from the cursor committed in the host's Dagster storage and
    appends to the CSV in the host's project; a sandbox has neither, so it would re-read from the
    start and write a file holding only the new rows. Until both travel with the run, such runs
    run locally. Counted by the steps the run executes: a run of only the appending writer (a
    re-execution, an asset's Materialize) is refused too; one of only other steps is not.
    """
    from osiris_dagster.components.incremental import incremental_cursor

    for selected in selection or []:
        pipeline = selected.pipeline
        # A writer of an incremental extract appends after the host's committed cursor: the same.
        steps = [
            step.id
            for step in selected.steps
            if incremental_cursor(step) or any(incremental_cursor(pipeline.step(need)) for need in step.needs)
        ]
        if steps:
            raise RuntimeError(
                f"E2BRunLauncher: {selected.pipeline.name} has incremental steps ({', '.join(steps)}); their "
                "committed cursor and appended CSV live on the host, so sandboxed runs cannot continue them yet. "
                "Run this job with the default run launcher (e.g. `osiris-dagster run`)."
            )


def _refuse_writes_outside_project(
    run: DagsterRun, project: ProjectLayout, selection: list[SelectedPipeline] | None
) -> None:
    """Fail the launch of a run writing under an ``output_roots`` folder outside the project.

    The sandbox writes into its copy of the project and only the project comes back, so the
    file would silently never reach the host's folder (``job_needs.writes_outside_project``).
    """

    if selection is None:
        return
    try:
        found = writes_outside_project(project, selection, _run_params(run.run_config), os.environ)
    except Exception:  # a broken pipeline fails in the sandbox with its own message
        return
    if found:
        listed = ", ".join(f"{step} -> {path}" for step, path in found)
        raise RuntimeError(
            f"E2BRunLauncher: {listed}: a sandboxed run brings back only files inside the project folder, "
            "so a file under an output_roots folder outside it would never arrive here. Write inside the "
            "project (and copy it on), or run this job with the default run launcher."
        )


def _needs_spec(
    run: DagsterRun, project: ProjectLayout, selection: list[SelectedPipeline] | None, settings: SandboxSettings
) -> dict[str, list[str]] | None:
    """The variable NAMES and modules the run needs (`job_needs`), worked out here, not in the supervisor.

    In a long-lived launching process (the daemon) this is a few ms, where the fresh supervisor would
    spend a few hundred on imports before it can start the sandbox. Names only: the supervisor
    reads the values from its environment (inherited from this process), so no secret is written.
    None if it cannot be worked out here: the supervisor then does it and reports the error.
    """
    if selection is None:
        return None
    try:
        needs = job_needs(
            project,
            selection,
            _run_params(run.run_config),
            passthrough=settings.env_passthrough,
            extra_modules=settings.preflight_modules,
            environ=os.environ,
        )
    except Exception:
        return None
    secrets = registered_secrets()
    secret_names = [name for name, value in needs.env.items() if is_secret_key(name) or value in secrets]
    return {
        "env_names": sorted(needs.env),
        "secret_env_names": sorted(secret_names),
        "modules": list(needs.modules),
    }


def _run_params(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """`${params.x}` values given in run config (`resources.osiris_params.config.values`)."""
    resource = (run_config or {}).get("resources", {}).get("osiris_params", {})
    return dict((resource.get("config") or {}).get("values") or {})


def _supervisor_pid(run: DagsterRun) -> int | None:
    value = run.tags.get(SUPERVISOR_PID_TAG)
    return int(value) if value and value.isdigit() else None


def is_supervised(instance_root: str | os.PathLike[str], run_id: str) -> bool:
    """Is anything supervising the run right now (its supervision lock held)?"""
    return run_lock.is_held(RunFiles.for_run(instance_root, run_id).supervision_lock)
