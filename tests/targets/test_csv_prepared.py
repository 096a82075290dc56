"""A CSV prepared while its table is extracted is adopted only when it is exactly what the write would write."""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from pathlib import Path

import pytest

from osiris_dagster.sources.sql_extract import SourceError, extract_to_staging
from osiris_dagster.staging import iter_staged_batches
from osiris_dagster.targets.csv_prepared import CsvPlan, CsvPreparation, adopt_prepared
from osiris_dagster.targets.csv_writer import CsvOptions, write_csv


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER, label TEXT, blob BLOB)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, f'row {i}, "q"', bytes([i % 256])) for i in range(5000)])
    return f"sqlite:///{path}"


def extract(source: str, tmp_path: Path, plan: CsvPlan, query: str = "SELECT * FROM t ORDER BY id"):  # type: ignore[no-untyped-def]
    return extract_to_staging(
        source, query, tmp_path / "t.arrow", batch_rows=700, consumers=[functools.partial(CsvPreparation, plan)]
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_the_prepared_file_is_byte_identical_to_a_write_from_the_staged_table(source: str, tmp_path: Path) -> None:
    options = CsvOptions(delimiter=";", quoting="all", newline="crlf")
    plan = CsvPlan(tmp_path / "out" / "t.csv", options, "run-1")
    staged = extract(source, tmp_path, plan)
    adopted = adopt_prepared(plan, staged)
    assert adopted is not None and adopted.rows == 5000
    reference = write_csv(iter_staged_batches(staged.path), staged.schema, tmp_path / "reference.csv", options)
    assert plan.target.read_bytes() == reference.path.read_bytes()
    assert adopted.bytes == reference.bytes
    assert leftovers(plan.target.parent) == []


def test_another_run_or_another_staged_file_is_never_adopted(source: str, tmp_path: Path) -> None:
    plan = CsvPlan(tmp_path / "t.csv", CsvOptions(), "run-1")
    staged = extract(source, tmp_path, plan)
    assert adopt_prepared(dataclasses.replace(plan, run_id="run-2"), staged) is None
    assert adopt_prepared(dataclasses.replace(plan, options=CsvOptions(delimiter="|")), staged) is None
    assert not plan.target.exists() and leftovers(tmp_path) == []  # a mismatch discards the prepared file
    staged = extract(source, tmp_path, plan)
    extract_to_staging(source, "SELECT * FROM t WHERE id < 10", staged.path)  # the staged file changed since
    assert adopt_prepared(plan, staged) is None


def test_a_failed_extraction_leaves_no_prepared_file(source: str, tmp_path: Path) -> None:
    plan = CsvPlan(tmp_path / "t.csv", CsvOptions(), "run-1")
    with pytest.raises(SourceError):
        extract(source, tmp_path, plan, "SELECT id, 1 / (id - 4000) FROM t WHERE nonsense(id)")
    assert leftovers(tmp_path) == [] and adopt_prepared(plan, None) is None  # type: ignore[arg-type]


def test_a_preparation_that_cannot_encode_is_dropped_and_the_extraction_still_succeeds(
    source: str, tmp_path: Path
) -> None:
    with sqlite3.connect(source.removeprefix("sqlite:///")) as db:
        db.execute("INSERT INTO t VALUES (9999, '日本', NULL)")
    plan = CsvPlan(tmp_path / "t.csv", CsvOptions(encoding="latin-1"), "run-1")
    staged = extract(source, tmp_path, plan)
    assert staged.rows == 5001
    assert adopt_prepared(plan, staged) is None and leftovers(tmp_path) == []


def test_the_preparing_thread_yields_to_the_extraction_and_the_process_keeps_its_priority(tmp_path: Path) -> None:
    """Only the background thread is lowered (Linux niceness is per thread): the run's own
    process, and every thread it starts later, keep the priority they had."""
    import os
    import threading
    import time

    import pyarrow as pa

    before = os.getpriority(os.PRIO_PROCESS, 0)
    plan = CsvPlan(tmp_path / "out.csv", CsvOptions(), "run-nice")
    preparation = CsvPreparation(plan, pa.schema([pa.field("a", pa.string())]))
    try:
        thread_id = preparation._thread.native_id
        assert thread_id is not None and thread_id != threading.get_native_id()
        deadline = time.monotonic() + 5  # the thread lowers itself when it starts
        while os.getpriority(os.PRIO_PROCESS, thread_id) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, thread_id) == min(before + 10, 19)
    finally:
        preparation.abandon()
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    later.start()
    later.join()
    assert os.getpriority(os.PRIO_PROCESS, 0) == before and seen == [before]
