"""What an E2B-backed run needs to know about its sandbox, as configured in `dagster.yaml`.

One frozen value object shared by the launcher (which reads it from the instance config) and the
per-run supervisor (which receives it as JSON). It deliberately holds no credential: the E2B key
is read from the supervisor's environment (`E2B_API_KEY`) at the moment the SDK needs it, so it
is never written into a file, a run tag or a process argument.

Reaching the backend: e2b 2.63 deprecates ``api_url``/``sandbox_url`` (and ``E2B_API_URL``/
``E2B_SANDBOX_URL``), "for internal use only". Both backends pass only supported settings: the
cloud backend ``api_key`` and, for a self-hosted E2B, ``domain`` (``E2B_DOMAIN``); the local
backend ``domain=sandbox.osiris.internal`` and ``proxy=<server_url>`` - the SDK tunnels its HTTPS
to ``api.<domain>`` and ``<port>-<id>.<domain>`` through the local server, which answers as those
names with a certificate from a per-user CA the process is made to trust (``sandbox_trust``).
``api_url``/``sandbox_url`` in the config, and the two variables in the environment, are refused
with a message naming the replacement, rather than silently ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from osiris_dagster.sandbox_trust import SANDBOX_DOMAIN, trust_local_ca

Backend = Literal["e2b", "local"]

E2B_API_KEY_ENV = "E2B_API_KEY"
E2B_DOMAIN_ENV = "E2B_DOMAIN"
SANDBOX_SERVER_ENV = "OSIRIS_SANDBOX_SERVER"
# The SDK settings it deprecates: refused, naming what replaces them.
DEPRECATED_SETTINGS = ("api_url", "sandbox_url")
DEPRECATED_ENV = ("E2B_API_URL", "E2B_SANDBOX_URL")
# Every variable `sdk_kwargs` reads. A run's supervisor takes them from the process that launched
# the run, never from the resident service's own environment: that is whoever started the service,
# maybe hours ago, and would keep an API key rotated since (or a server URL changed since) alive
# for as long as any daemon, webserver or code server lives.
SDK_ENV = (E2B_API_KEY_ENV, E2B_DOMAIN_ENV, SANDBOX_SERVER_ENV, *DEPRECATED_ENV)
# The local sandbox server accepts any key unless told otherwise; this is the one it documents.
LOCAL_API_KEY = "e2b_local_sandbox"


class SandboxConfigError(Exception):
    """The launcher's configuration cannot reach a sandbox backend (the message says what to set)."""


@dataclass(frozen=True)
class SandboxSettings:
    backend: Backend = "e2b"
    template: str | None = None
    sandbox_timeout_s: int = 3600
    # Template build resources: E2B fixes CPU and memory per template, not per sandbox.
    cpu_count: int | None = None
    memory_mb: int | None = None
    env_passthrough: tuple[str, ...] = ()
    install_deps: bool = False
    wheel_dir: str | None = None
    pip_args: tuple[str, ...] = ()
    python: str = "python3"
    # Extra modules the preflight must find (drivers the template should carry).
    preflight_modules: tuple[str, ...] = ()
    server_url: str | None = None
    domain: str | None = None
    # Sandbox creation retries (tenacity): up to this many attempts within this many seconds.
    # E2B answers 429 at its concurrency/creation-rate limits (Hobby: 20 sandboxes, 1 create/s).
    create_attempts: int = 10
    create_budget_s: float = 120.0
    cancel_grace_s: float = 30.0
    # Warm pool (`pool:` in the launcher config): idle, dependency-checked sandboxes kept ready.
    pool_size: int = 0
    pool_idle_ttl_s: int = 600
    pool_name: str = "default"
    # The supervision service (one per DAGSTER_HOME) exits after this long without a run.
    supervision_idle_s: float = 60.0
    # Start the service when the launcher is loaded; it stays while a loading process lives.
    supervision_prewarm: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SandboxSettings:
        values = dict(config)
        pool = values.pop("pool", None) or {}
        for key in ("size", "idle_ttl_s", "name"):
            if pool.get(key) is not None:
                values[f"pool_{key}"] = pool[key]
        for name in ("env_passthrough", "pip_args", "preflight_modules"):
            values[name] = tuple(values.get(name) or ())
        deprecated = [name for name in DEPRECATED_SETTINGS if values.get(name)]
        if deprecated:
            raise SandboxConfigError(
                f"run_launcher.config.{'/'.join(deprecated)} is no longer accepted (e2b 2.63 deprecates it): for "
                f"backend 'local' set run_launcher.config.server_url (or {SANDBOX_SERVER_ENV}), for a "
                "self-hosted E2B set run_launcher.config.domain (or E2B_DOMAIN)"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SandboxSettings:
        return cls.from_config(json.loads(text))

    def sdk_kwargs(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Connection arguments for `Sandbox.create/connect/kill`, resolved from config then env."""
        environ = os.environ if environ is None else environ
        deprecated = [name for name in DEPRECATED_ENV if environ.get(name)]
        if deprecated:
            raise SandboxConfigError(
                f"{' and '.join(deprecated)} in the environment: e2b 2.63 deprecates it and the launcher refuses "
                f"it; unset it and set {SANDBOX_SERVER_ENV} (backend 'local') or E2B_DOMAIN (self-hosted E2B)"
            )
        api_key = environ.get(E2B_API_KEY_ENV)
        if self.backend == "local":
            server_url = self.server_url or environ.get(SANDBOX_SERVER_ENV)
            if not server_url:
                raise SandboxConfigError(
                    "backend 'local' needs the sandbox server's URL: set run_launcher.config.server_url or "
                    f"{SANDBOX_SERVER_ENV} (printed by `osiris-dagster sandbox serve`)"
                )
            try:
                trust_local_ca()
            except FileNotFoundError as exc:
                raise SandboxConfigError(
                    f"backend 'local': no local sandbox CA at {exc.args[0]}; start `osiris-dagster sandbox serve` "
                    "as the same user first (it creates the CA the SDK must trust)"
                ) from exc
            return {"api_key": api_key or LOCAL_API_KEY, "domain": SANDBOX_DOMAIN, "proxy": server_url}
        if not api_key:
            raise SandboxConfigError(f"backend 'e2b' needs {E2B_API_KEY_ENV} in the environment of the launcher")
        if self.server_url:
            raise SandboxConfigError(
                "run_launcher.config.server_url is for backend 'local' only; for a self-hosted E2B set "
                "run_launcher.config.domain (or E2B_DOMAIN)"
            )
        kwargs: dict[str, Any] = {"api_key": api_key}
        domain = self.domain or environ.get(E2B_DOMAIN_ENV)
        if domain:
            kwargs["domain"] = domain
        return kwargs
