"""The per-run supervision lock: held for exactly as long as something supervises the run.

Whoever supervises a run (a thread of the supervision service, or a standalone ``python -m
osiris_dagster.remote.supervisor``) holds a write lock on ``<run dir>/supervision.lock``; run
monitoring (`E2BRunLauncher.check_run_worker_health`) and `terminate` ask whether it is held. A
pid would not do: one service supervises many runs, and a dead service must read as "every run
it held is unsupervised" — the kernel drops its locks the moment it dies, `kill -9` included.

Open-file-description locks (``F_OFD_SETLK``) rather than ``flock``: they can be TESTED without
taking them (``F_OFD_GETLK``), so a health check can never make a supervisor that is just
starting believe another one holds the run; and unlike classic POSIX locks they belong to the
open file, so two threads of one process conflict as two processes do.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

# struct flock: l_type, l_whence, l_start, l_len, l_pid (+ padding); l_len 0 = the whole file.
_FLOCK = struct.Struct("hhqqi4x")
_WHOLE_FILE_WRITE_LOCK = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)


class RunLock:
    """A held supervision lock; `release` (or the holder's death) frees it."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def try_acquire(cls, path: Path) -> RunLock | None:
        """The lock, or None if someone already supervises the run."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _WHOLE_FILE_WRITE_LOCK)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open file drops its lock
            self._fd = None


def is_held(path: Path) -> bool:
    """Does anyone (any process, any thread) hold the lock at ``path``? Takes nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _WHOLE_FILE_WRITE_LOCK)
    finally:
        os.close(fd)
    return _FLOCK.unpack(answer)[0] != fcntl.F_UNLCK
