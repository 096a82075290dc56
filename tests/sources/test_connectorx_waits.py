"""Asking connectorx for batches only once they are likely fetched loses, reorders and adds nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from osiris_dagster.sources import mysql_reader
from osiris_dagster.sources.mysql_reader import _waiting_without_the_gil


def _slow_batches(sizes: list[int], delays: list[float]) -> Iterator[pa.RecordBatch]:
    start = 0
    for size, delay in zip(sizes, delays, strict=True):
        time.sleep(delay)
        yield pa.record_batch([pa.array([str(i) for i in range(start, start + size)])], names=["id"])
        start += size


def test_every_batch_comes_once_in_order_whatever_the_waits() -> None:
    sizes = [4, 4, 4, 4, 4, 4, 1]
    delays = [0.02, 0.0, 0.01, 0.03, 0.0, 0.005, 0.01]
    batches = list(_waiting_without_the_gil(_slow_batches(sizes, delays), batch_rows=4))
    assert [b.num_rows for b in batches] == sizes
    assert [v for b in batches for v in b.column(0).to_pylist()] == [str(i) for i in range(sum(sizes))]


def test_an_empty_stream_ends_at_once() -> None:
    assert list(_waiting_without_the_gil(iter([]), batch_rows=4)) == []


def test_a_server_stall_is_not_taken_for_the_time_of_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # One 0.3 s stall mid-stream, then 20 batches that are ready at once: the pause after the stall
    # is capped, so the reader does not sleep for seconds while connectorx piles batches up. The
    # pauses the reader asks for are recorded (not wall time, which a loaded machine stretches).
    real_sleep = time.sleep
    pauses: list[float] = []

    def recorded(seconds: float) -> None:
        pauses.append(seconds)
        real_sleep(seconds)

    def stalling_batches() -> Iterator[pa.RecordBatch]:
        for index in range(23):
            if index == 2:
                real_sleep(0.3)  # the server's stall: not one of the reader's pauses
            yield pa.record_batch([pa.array([str(index)] * 4)], names=["id"])

    monkeypatch.setattr(mysql_reader.time, "sleep", recorded)
    batches = list(_waiting_without_the_gil(stalling_batches(), batch_rows=4))
    assert len(batches) == 23
    assert pauses and max(pauses) <= 0.05  # the documented cap; uncapped, the first would be 0.225 s
    # Uncapped ~2 s (0.225 s decaying by 0.9 over 20 batches); capped at most a pause per batch.
    assert sum(pauses) <= len(batches) * 0.05
