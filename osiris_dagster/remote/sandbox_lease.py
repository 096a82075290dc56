"""A run's hold on its sandbox: the lifetime is renewed while the run lives, and a kill is confirmed.

E2B fixes a sandbox's end at creation (``timeout``) and kills it then, whatever runs inside. A
fixed ``sandbox_timeout_s`` is therefore either a cap that kills long runs or an hour of billed
sandbox after a lost supervisor. Instead the sandbox is created with ``sandbox_timeout_s`` and a
thread of the supervisor sets it again (``Sandbox.set_timeout``, lifetime = now + timeout) every
third of it, from the moment the sandbox exists until the supervisor is done with it (a thread,
not the follow loop: the supervisor's start-up - importing Dagster, uploading the bundle - can
itself outlast a short timeout): a run lives as long as it needs, and a sandbox whose supervisor is gone
dies ``sandbox_timeout_s`` after the last renewal at the latest - the reaper
(`sandbox_reaper`) usually kills it much sooner.

A kill is only reported as done when the service confirmed it: ``kill()`` returning True (killed)
or False (it was already gone). An exception (service unreachable) is NOT a kill: the sandbox may
live on, and saying "killed" would hide a leak.

Deliberately not here: retries of the kill (the reaper repeats it every interval) and anything
about events or the run's status.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from osiris_dagster.remote.supervision_logs import inherit
from osiris_dagster.secrets import mask_text

log = logging.getLogger(__name__)

# Renew at a third of the lifetime: two renewals can fail (a network blip) before it lapses.
RENEW_FRACTION = 1 / 3
MIN_RENEW_INTERVAL_S = 1.0


class SandboxLease:
    """Keeps one sandbox alive from `start` to `stop` (a daemon thread renewing its timeout)."""

    def __init__(self, sandbox: Any, timeout_s: int) -> None:
        self.sandbox = sandbox
        self.timeout_s = timeout_s
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=inherit(self._renew_loop), name=f"sandbox-lease-{sandbox.sandbox_id}", daemon=True
        )

    @property
    def interval_s(self) -> float:
        return max(MIN_RENEW_INTERVAL_S, self.timeout_s * RENEW_FRACTION)

    def start(self) -> SandboxLease:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sandbox.set_timeout(self.timeout_s)
                self.renewals += 1
            except Exception as error:  # a blip: two more chances before it lapses
                log.warning("could not extend sandbox %s: %s", self.sandbox.sandbox_id, mask_text(str(error)))


@dataclass(frozen=True)
class KillOutcome:
    """What a kill attempt established about the sandbox."""

    sandbox_id: str
    confirmed: bool  # the sandbox is known not to run any more
    message: str


def kill_sandbox(sandbox_id: str, sdk_kwargs: dict[str, Any]) -> KillOutcome:
    """``Sandbox.kill`` with the answer spelled out; never raises."""
    from e2b import Sandbox

    try:
        killed = Sandbox.kill(sandbox_id, **sdk_kwargs)
    except Exception as error:
        return KillOutcome(
            sandbox_id,
            False,
            f"Could not kill sandbox {sandbox_id} (it may still be running; the reaper retries): "
            f"{mask_text(f'{type(error).__name__}: {error}')}",
        )
    if killed:
        return KillOutcome(sandbox_id, True, f"Sandbox {sandbox_id} killed")
    return KillOutcome(sandbox_id, True, f"Sandbox {sandbox_id} was already gone")
