"""Per-run log files inside the one supervision service: each record goes to its own run's log.

The service supervises every run as a thread, and the code it runs logs through module loggers
(`supervisor`, `sandbox_lease`, `event_relay`, ...) that know nothing of runs. So the run is told
by the THREAD: a run's thread is bound to its log file (`bound_to`), the threads it starts inherit
the binding (`inherit`), and `RunLogRouter` — the service's one logging handler — writes each
record, masked, to the log of the emitting thread's run, or to the service's own log if the thread
belongs to no run. Nothing of one run can reach another run's log: a thread is bound to one run
only. Outside the service (``python -m osiris_dagster.remote.supervisor``) no thread is bound and
records go to stderr, the run's log there, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from osiris_dagster.secrets import mask_text

_FORMAT = "%(asctime)s %(levelname)s %(message)s"

_lock = threading.Lock()
# Thread ident -> the open log file of the run that thread works for.
_bindings: dict[int, TextIO] = {}


@contextmanager
def bound_to(path: Path) -> Iterator[None]:
    """Route this thread's records (and those of threads it starts via `inherit`) to ``path``."""
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below, after the run's last record
    ident = threading.get_ident()
    with _lock:
        _bindings[ident] = handle
    try:
        yield
    finally:
        with _lock:
            for key in [key for key, bound in _bindings.items() if bound is handle]:
                del _bindings[key]
        handle.close()


def inherit(target: Callable[..., Any]) -> Callable[..., Any]:
    """``target`` wrapped so that, run in a new thread, it logs to the current thread's run log."""
    with _lock:
        handle = _bindings.get(threading.get_ident())
    if handle is None:
        return target

    def bound(*args: Any, **kwargs: Any) -> Any:
        ident = threading.get_ident()
        with _lock:
            if not handle.closed:
                _bindings[ident] = handle
        try:
            return target(*args, **kwargs)
        finally:
            with _lock:
                if _bindings.get(ident) is handle:
                    del _bindings[ident]

    return bound


class RunLogRouter(logging.Handler):
    """Writes each record, masked, to the emitting thread's run log, else to ``fallback``."""

    def __init__(self, fallback: TextIO) -> None:
        super().__init__()
        self._fallback = fallback
        self.setFormatter(logging.Formatter(_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = mask_text(self.format(record)) + "\n"
            with _lock:
                stream = _bindings.get(record.thread or 0, self._fallback)
                if stream.closed:
                    stream = self._fallback
                stream.write(text)
                stream.flush()
        except Exception:
            self.handleError(record)


class MaskedStream:
    """A text stream whose every write is masked (tracebacks included)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(mask_text(text))

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install(fallback: TextIO) -> None:
    """Make `RunLogRouter` the process's only log handler (the service calls this once)."""
    logging.basicConfig(level=logging.WARNING, handlers=[RunLogRouter(fallback)], force=True)
    logging.getLogger("osiris_dagster.remote.supervisor").setLevel(logging.INFO)
    logging.getLogger("osiris_dagster.remote.supervision_service").setLevel(logging.INFO)
