"""Writing CSV files: exact bytes, encodings, and atomicity (no partial file, ever)."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from osiris_dagster.targets import csv_writer
from osiris_dagster.targets.csv_writer import CsvEncodingError, CsvOptions, replace_target, write_csv

# Staged tables are text (each cell as the source printed it); the writer only quotes.
SCHEMA = pa.schema([(name, pa.string()) for name in ("id", "title", "rating", "created_at", "is_active")])


def batch(rows: list[tuple]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMA]
    return pa.RecordBatch.from_arrays(
        [pa.array(list(c), type=f.type) for c, f in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    )


ROWS = [
    ("1", "Amélie, à Paris", "7.9", "2001-04-25 20:00:00", "1"),
    ("2", 'The "sequel"\nPart 2', "8.0", "2001-04-25 20:00:00.500000", "0"),
    ("3", None, None, None, None),
]


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_the_exact_bytes_and_reports_rows_and_size(tmp_path: Path) -> None:
    target = tmp_path / "out" / "movies.csv"  # the parent is created
    result = write_csv([batch(ROWS[:2]), batch(ROWS[2:])], SCHEMA, target, CsvOptions())
    expected = (
        "id,title,rating,created_at,is_active\n"
        '1,"Amélie, à Paris",7.9,2001-04-25 20:00:00,1\n'
        '2,"The ""sequel""\nPart 2",8.0,2001-04-25 20:00:00.500000,0\n'
        "3,,,,\n"
    ).encode()
    assert target.read_bytes() == expected
    assert (result.path, result.rows, result.bytes) == (target, 3, len(expected))
    assert files_in(target.parent) == ["movies.csv"]


def test_python_csv_reads_back_every_value(tmp_path: Path) -> None:
    target = tmp_path / "movies.csv"
    write_csv([batch(ROWS)], SCHEMA, target, CsvOptions())
    with open(target, newline="", encoding="utf-8") as handle:
        parsed = list(csv.reader(handle))
    assert parsed[1:] == [
        ["1", "Amélie, à Paris", "7.9", "2001-04-25 20:00:00", "1"],
        ["2", 'The "sequel"\nPart 2', "8.0", "2001-04-25 20:00:00.500000", "0"],
        ["3", "", "", "", ""],
    ]


def test_crlf_other_delimiter_no_header_and_quote_all(tmp_path: Path) -> None:
    target = tmp_path / "a.csv"
    write_csv([batch(ROWS[:1])], SCHEMA, target, CsvOptions(delimiter=";", newline="crlf", header=False))
    assert target.read_bytes() == "1;Amélie, à Paris;7.9;2001-04-25 20:00:00;1\r\n".encode()
    write_csv([batch(ROWS[2:])], SCHEMA, target, CsvOptions(quoting="all"))
    assert target.read_bytes() == b'"id","title","rating","created_at","is_active"\n"3",,,,\n'


def test_latin1_output_is_encoded(tmp_path: Path) -> None:
    target = tmp_path / "latin1.csv"
    write_csv([batch(ROWS[:1])], SCHEMA, target, CsvOptions(encoding="latin-1", header=False))
    assert target.read_bytes() == '1,"Amélie, à Paris",7.9,2001-04-25 20:00:00,1\n'.encode("latin-1")


def test_a_value_the_encoding_cannot_hold_names_its_column_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "latin1.csv"
    rows = [("1", "日本", None, None, None)]
    with pytest.raises(CsvEncodingError, match="column 'title'"):
        write_csv([batch(rows)], SCHEMA, target, CsvOptions(encoding="latin-1"))
    assert files_in(tmp_path) == []


def test_a_failing_batch_stream_leaves_no_target_and_no_temp_file(tmp_path: Path) -> None:
    def batches() -> Iterator[pa.RecordBatch]:
        yield batch(ROWS)
        raise RuntimeError("source broke mid-stream")

    target = tmp_path / "movies.csv"
    with pytest.raises(RuntimeError, match="mid-stream"):
        write_csv(batches(), SCHEMA, target, CsvOptions())
    assert files_in(tmp_path) == []


def test_a_failed_rewrite_keeps_the_previous_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "movies.csv"
    write_csv([batch(ROWS)], SCHEMA, target, CsvOptions())
    before = target.read_bytes()

    def broken() -> Iterator[pa.RecordBatch]:
        yield batch(ROWS)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_csv(broken(), SCHEMA, target, CsvOptions())
    assert target.read_bytes() == before
    assert files_in(tmp_path) == ["movies.csv"]


def test_an_empty_table_is_just_the_header(tmp_path: Path) -> None:
    target = tmp_path / "empty.csv"
    result = write_csv([], SCHEMA, target, CsvOptions())
    assert target.read_bytes() == b"id,title,rating,created_at,is_active\n"
    assert result.rows == 0


def test_large_batches_are_sliced_and_written_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_writer, "_MAX_SLICE_BYTES", 1024)  # force many slices and threads in flight
    ids = list(range(20_000))
    big = pa.record_batch({"id": pa.array([str(i) for i in ids]), "text": pa.array([f"row {i}, text" for i in ids])})
    target = tmp_path / "big.csv"
    result = write_csv([big, big.slice(0, 5)], big.schema, target, CsvOptions())
    with open(target, newline="") as handle:
        parsed = list(csv.reader(handle))
    assert result.rows == 20_005
    assert parsed[1:] == [[str(i), f"row {i}, text"] for i in [*ids, 0, 1, 2, 3, 4]]


def test_a_batch_with_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    other = pa.record_batch({"x": pa.array(["1"])})
    with pytest.raises(ValueError, match="1 columns"):
        write_csv([other], SCHEMA, tmp_path / "x.csv", CsvOptions())
    assert files_in(tmp_path) == []


def test_a_rewrite_replaces_the_old_file_and_lets_go_of_it(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_bytes(b"old\n" * 1000)
    open_before = len(list(Path("/proc/self/fd").iterdir()))
    write_csv([batch(ROWS)], SCHEMA, target, CsvOptions())
    assert target.read_bytes().startswith(b"id,title,rating,created_at,is_active\n1,")
    # The old file is held open across the rename and closed on a background thread.
    deadline = time.monotonic() + 5
    while len(list(Path("/proc/self/fd").iterdir())) > open_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(list(Path("/proc/self/fd").iterdir())) == open_before


def test_a_fifo_at_the_target_is_replaced_without_waiting_for_a_writer(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    os.mkfifo(target)
    source = tmp_path / "new.csv"
    source.write_bytes(b"new\n")
    replace_target(source, target)
    assert target.read_bytes() == b"new\n" and not source.exists()
