"""The generic extraction path on SQLite: declared types win, values are exact, staging is atomic."""

from __future__ import annotations

import csv
import sqlite3
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy.engine import URL

from osiris_dagster.sources.sql_extract import SourceError, extract_to_staging
from osiris_dagster.staging import iter_staged_batches, open_staged
from osiris_dagster.targets.csv_writer import CsvOptions, write_csv

ROWS = [
    (1, "Amélie, à Paris", 7.9, 2001, "2001-04-25", "2001-04-25 20:00:00", b"\x00\xff", 1),
    (2, 'The "sequel"\nPart 2', 8, None, None, "2001-04-25 20:00:00.5", None, 0),
    (3, None, None, 1999, "1999-12-31", None, b"", None),
]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> URL:
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE movies (id INTEGER PRIMARY KEY, title VARCHAR(200), rating DECIMAL(3,1), "
            "release_year INT, released DATE, created_at DATETIME, poster BLOB, is_active BOOLEAN)"
        )
        db.executemany("INSERT INTO movies VALUES (?, ?, ?, ?, ?, ?, ?, ?)", ROWS)
        db.executemany("INSERT INTO movies (id, title) VALUES (?, ?)", [(i, f"filler {i}") for i in range(100, 1100)])
    return URL.create("sqlite", database=str(path))


def reference_field(value: object) -> str:
    """How the product promises each SQLite value appears in the CSV (independent of csv_format)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def test_declared_types_decide_the_schema(sqlite_url: URL, tmp_path: Path) -> None:
    staged = extract_to_staging(sqlite_url, "SELECT * FROM movies ORDER BY id", tmp_path / "movies.arrow")
    assert staged.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("title", pa.string()),
            ("rating", pa.decimal128(3, 1)),
            ("release_year", pa.int64()),
            ("released", pa.date32()),
            ("created_at", pa.timestamp("us")),
            ("poster", pa.binary()),
            ("is_active", pa.int8()),
        ]
    )
    assert staged.rows == 1003
    first = next(iter_staged_batches(staged.path)).slice(0, 2).column("rating").to_pylist()
    assert first == [Decimal("7.9"), Decimal("8.0")]


def test_values_reach_the_csv_exactly(sqlite_url: URL, tmp_path: Path) -> None:
    staged = extract_to_staging(sqlite_url, "SELECT * FROM movies WHERE id < 100 ORDER BY id", tmp_path / "m.arrow")
    target = tmp_path / "movies.csv"
    write_csv(iter_staged_batches(staged.path), staged.schema, target, CsvOptions())
    with open(target, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["id", "title", "rating", "release_year", "released", "created_at", "poster", "is_active"]
    expected_ratings = {1: "7.9", 2: "8.0", 3: ""}  # DECIMAL(3,1): REAL 7.9 and INTEGER 8 at scale 1
    expected_stamps = {1: "2001-04-25 20:00:00", 2: "2001-04-25 20:00:00.500000", 3: ""}
    for row, source in zip(rows, ROWS, strict=True):
        record_id = source[0]
        assert row[2] == expected_ratings[record_id]
        assert row[5] == expected_stamps[record_id]
        for index in (0, 1, 3, 4, 6, 7):
            assert row[index] == reference_field(source[index]), (record_id, header[index])


def test_batches_stream_and_reopen_cheaply(sqlite_url: URL, tmp_path: Path) -> None:
    staged = extract_to_staging(sqlite_url, "SELECT id, title FROM movies", tmp_path / "m.arrow", batch_rows=100)
    batches = list(iter_staged_batches(staged.path))
    assert len(batches) == 11
    assert max(b.num_rows for b in batches) == 100
    assert open_staged(staged.path) == staged


def test_a_computed_query_infers_types_from_values(sqlite_url: URL, tmp_path: Path) -> None:
    query = "SELECT id * 2 AS twice, upper(title) AS loud, rating FROM movies m WHERE id = 1"
    staged = extract_to_staging(sqlite_url, query, tmp_path / "m.arrow")
    assert staged.schema == pa.schema([("twice", pa.int64()), ("loud", pa.string()), ("rating", pa.float64())])


def test_a_failing_query_raises_source_error_and_leaves_no_file(sqlite_url: URL, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no_such_table"):
        extract_to_staging(sqlite_url, "SELECT * FROM no_such_table", tmp_path / "m.arrow")
    assert [p.name for p in tmp_path.iterdir()] == ["source.db"]


def test_a_value_that_does_not_fit_its_declared_type_names_the_column(sqlite_url: URL, tmp_path: Path) -> None:
    with sqlite3.connect(sqlite_url.database) as db:
        db.execute("INSERT INTO movies (id, rating) VALUES (5000, 7.95)")
    with pytest.raises(SourceError, match="column 'rating'"):
        extract_to_staging(sqlite_url, "SELECT * FROM movies", tmp_path / "m.arrow")
    assert [p.name for p in tmp_path.iterdir()] == ["source.db"]
