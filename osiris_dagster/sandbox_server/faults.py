"""Fault injection: drop command streams and file transfers while the sandbox lives on.

Between a host and E2B's cloud, connections break: a load balancer recycles a
long-lived HTTP stream, a NAT table forgets it, a deploy restarts a proxy. The
sandbox and its processes are not affected; only the client's view is. A remote-run
supervisor must tell that apart from a dead sandbox (reconnect by pid, retry the
transfer) - and it can only be tested if the local server can break connections on
purpose. This module decides *which* transfer to break and *when*; the server does
the breaking (a TCP reset, ``Exchange.abort``).

What is dropped (``targets``):

* ``streams``: the ``process.Process/Start`` and ``/Connect`` server streams. The cut
  happens after the start event (the client knows the pid and can re-attach) at a
  moment drawn uniformly from ``[earliest, earliest + cut]`` where ``earliest`` is
  the later of "the stream opened" and "the sandbox is ``after`` seconds old". The
  process keeps running; output produced while no stream is attached is lost, as
  with envd (see ``envd_process``).
* ``files``: ``GET /files`` (reset after a random fraction of the body was sent) and
  ``POST /files`` (reset after a random fraction of the request body was read;
  nothing is written). Transfers that start before the sandbox is ``after`` seconds
  old are never dropped and not counted.

Which ones: every ``every``-th candidate of a sandbox, or each candidate with
probability ``rate`` - never both. ``max`` bounds the drops per sandbox (a stream
scheduled for a cut that ends before it is not counted), so a client with a retry
budget larger than ``max`` always gets through. Each sandbox draws from its own
``random.Random`` seeded with ``(seed, the sandbox's creation ordinal)``: with
sequential traffic the same seed drops the same transfers at the same points.

What it deliberately does not do: slow links, partial writes that the kernel still
delivers, corrupt bytes, faults on the REST control plane or unary RPCs. Those are
not failures the launcher has a recovery for.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FAULTS_ENV = "OSIRIS_SANDBOX_FAULTS"
TARGETS = ("streams", "files")
_KEYS = ("drop", "rate", "every", "after", "seed", "max", "cut")
_KIND_NAMES = {int: "an integer", float: "a number"}


class FaultSpecError(ValueError):
    """A malformed fault spec; the message names the field."""


@dataclass(frozen=True)
class FaultPlan:
    """What to drop and how often (the parsed ``--faults`` / ``OSIRIS_SANDBOX_FAULTS`` spec)."""

    targets: frozenset[str] = frozenset(TARGETS)
    rate: float = 0.0
    every: int = 0
    after_s: float = 0.0
    seed: int = 0
    max_drops: int = 3
    cut_within_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.targets or not self.targets <= set(TARGETS):
            got = "+".join(sorted(self.targets))
            raise FaultSpecError(f"drop: expected streams, files or streams+files, got {got!r}")
        if (self.rate > 0) == (self.every > 0):
            raise FaultSpecError("give exactly one of rate=P (0 < P <= 1) or every=N (N >= 1)")
        if not 0 <= self.rate <= 1:
            raise FaultSpecError(f"rate: must be between 0 and 1, got {self.rate}")
        if self.every < 0:
            raise FaultSpecError(f"every: must be >= 1, got {self.every}")
        if self.after_s < 0:
            raise FaultSpecError(f"after: must be >= 0 seconds, got {self.after_s}")
        if self.max_drops < 1:
            raise FaultSpecError(f"max: must be >= 1, got {self.max_drops}")
        if self.cut_within_s < 0:
            raise FaultSpecError(f"cut: must be >= 0 seconds, got {self.cut_within_s}")

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """``"every=3,after=2,seed=7"`` -> plan. Keys: drop, rate, every, after, seed, max, cut."""
        values: dict[str, str] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in _KEYS:
                raise FaultSpecError(f"{item!r}: expected key=value with key one of {', '.join(_KEYS)}")
            values[key] = value.strip()
        kwargs: dict[str, Any] = {}
        if "drop" in values:
            kwargs["targets"] = frozenset(t for t in values["drop"].split("+") if t)
        for key, name, kind in (
            ("rate", "rate", float),
            ("every", "every", int),
            ("after", "after_s", float),
            ("seed", "seed", int),
            ("max", "max_drops", int),
            ("cut", "cut_within_s", float),
        ):
            if key in values:
                try:
                    kwargs[name] = kind(values[key])
                except ValueError as exc:
                    raise FaultSpecError(f"{key}: expected {_KIND_NAMES[kind]}, got {values[key]!r}") from exc
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FaultPlan | None:
        spec = (os.environ if environ is None else environ).get(FAULTS_ENV, "").strip()
        if not spec:
            return None
        try:
            return cls.parse(spec)
        except FaultSpecError as exc:
            raise FaultSpecError(f"{FAULTS_ENV}: {exc}") from exc

    def describe(self) -> str:
        how = f"every={self.every}" if self.every else f"rate={self.rate}"
        return (
            f"drop={'+'.join(sorted(self.targets))},{how},after={self.after_s},"
            f"seed={self.seed},max={self.max_drops},cut={self.cut_within_s}"
        )


@dataclass
class _SandboxFaults:
    rng: random.Random
    candidates: int = 0
    scheduled: int = 0


@dataclass(frozen=True)
class Drop:
    """One executed drop, kept for tests and logs."""

    sandbox_id: str
    kind: str  # "stream" | "download" | "upload"
    detail: str


@dataclass
class FaultInjector:
    """Per-server fault state: decisions per sandbox and a record of executed drops."""

    plan: FaultPlan
    drops: list[Drop] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._sandboxes: dict[str, _SandboxFaults] = {}

    def _state(self, sandbox_id: str) -> _SandboxFaults:
        state = self._sandboxes.get(sandbox_id)
        if state is None:
            ordinal = len(self._sandboxes)
            state = _SandboxFaults(rng=random.Random(f"{self.plan.seed}:{ordinal}"))
            self._sandboxes[sandbox_id] = state
        return state

    def _select(self, state: _SandboxFaults) -> bool:
        state.candidates += 1
        draw = state.rng.random()  # drawn always, so the sequence does not depend on the budget
        if state.scheduled >= self.plan.max_drops:
            return False
        chosen = state.candidates % self.plan.every == 0 if self.plan.every else draw < self.plan.rate
        if chosen:
            state.scheduled += 1
        return chosen

    def stream_cut(self, sandbox_id: str, sandbox_started_at: float) -> float | None:
        """For a new command stream: the ``time.monotonic()`` moment to cut it, or None."""
        if "streams" not in self.plan.targets:
            return None
        with self._lock:
            state = self._state(sandbox_id)
            if not self._select(state):
                return None
            offset = state.rng.uniform(0, self.plan.cut_within_s)
        now = time.time()
        earliest = max(now, sandbox_started_at + self.plan.after_s)
        return time.monotonic() + (earliest - now) + offset

    def stream_ended_uncut(self, sandbox_id: str) -> None:
        """A stream scheduled for a cut ended first: give the drop back to the budget."""
        with self._lock:
            state = self._state(sandbox_id)
            state.scheduled = max(0, state.scheduled - 1)

    def file_cut(self, sandbox_id: str, sandbox_started_at: float) -> float | None:
        """For a new file transfer: the fraction of the body after which to reset, or None."""
        if "files" not in self.plan.targets or time.time() < sandbox_started_at + self.plan.after_s:
            return None
        with self._lock:
            state = self._state(sandbox_id)
            if not self._select(state):
                return None
            return state.rng.random()

    def record(self, sandbox_id: str, kind: str, detail: str) -> None:
        log.warning("fault injection: dropped %s of sandbox %s (%s)", kind, sandbox_id, detail)
        with self._lock:
            self.drops.append(Drop(sandbox_id, kind, detail))
