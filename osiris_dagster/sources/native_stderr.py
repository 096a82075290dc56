"""Keeping a Rust panic of a native reader (connectorx) off the user's console.

connectorx is Rust: when it panics, Rust's panic hook writes ``thread '...' panicked at ...``, the
message and (with ``RUST_BACKTRACE``) a backtrace straight to file descriptor 2, below Python, so
no ``sys.stderr`` swap or logging filter sees it. ``panic_output_filtered`` therefore points fd 2
at a pipe for the duration of the native read; a thread copies every line back to the real
stderr as it arrives (Dagster's console log and anything else keep flowing, in order, without
delay) except the lines of a panic block, which it keeps in ``panics`` so the caller can say in
one log line which path it took and why.

A panic block is the ``panicked at`` line, the message lines after it, and Rust's trailer: the
``note: run with `RUST_BACKTRACE=1``` hint or a ``stack backtrace:`` with its indented frames.

Deliberately not here: deciding what to do after a panic (``sources.mysql_reader`` falls back to
the generic path). Only one filter is active per process at a time; a nested or concurrent use
runs unfiltered rather than tangling the descriptors.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["PanicOutput", "panic_output_filtered"]

_PANIC_START = re.compile(rb"^thread '.*'.*? panicked at ")
_BACKTRACE_FRAME = re.compile(rb"^\s+(\d+:|at )")
_active = threading.Lock()


@dataclass
class PanicOutput:
    panics: list[str] = field(default_factory=list)


class _Filter:
    def __init__(self, read_fd: int, write_to: int, output: PanicOutput) -> None:
        self.read_fd, self.write_to, self.output = read_fd, write_to, output
        self.in_panic = False
        self.in_backtrace = False
        self.current: list[bytes] = []

    def run(self) -> None:
        pending = b""
        with open(self.read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.line(line + b"\n")
            if pending:
                self.line(pending)
        self.close_panic()

    def line(self, line: bytes) -> None:
        if _PANIC_START.match(line):
            self.close_panic()
            self.in_panic, self.current = True, [line]
            return
        if self.in_panic:
            self.current.append(line)
            if line.startswith(b"note: run with `RUST_BACKTRACE"):
                self.close_panic()
            elif line.startswith(b"stack backtrace:"):
                self.in_backtrace = True
            elif self.in_backtrace and not _BACKTRACE_FRAME.match(line):
                self.current.pop()
                self.close_panic()
                self.forward(line)
            return
        self.forward(line)

    def close_panic(self) -> None:
        if self.current:
            self.output.panics.append(b"".join(self.current).decode("utf-8", "replace").strip())
        self.in_panic = self.in_backtrace = False
        self.current = []

    def forward(self, line: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.write_to, line)


@contextlib.contextmanager
def panic_output_filtered() -> Iterator[PanicOutput]:
    output = PanicOutput()
    if not _active.acquire(blocking=False):
        yield output
        return
    try:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        stream = _Filter(read_fd, saved, output)
        thread = threading.Thread(target=stream.run, name="native-stderr", daemon=True)
        thread.start()
        try:
            yield output
        finally:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)  # closes the pipe's last write end: the thread sees EOF
            thread.join(timeout=10)
            os.close(saved)
    finally:
        _active.release()
