"""The generic extraction path on SQLite: declared types win, values are exact, staging is atomic."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy.engine import URL

from osiris_dagster.sources.sql_extract import SourceError, extract_to_staging
from osiris_dagster.staging import iter_staged_batches, open_staged, sql_type
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


def sqlite_text(db_path: str, query: str) -> list[list[str]]:
    """Each cell as SQLite itself prints the stored value (REAL: Python's shortest round-trip repr)."""
    with sqlite3.connect(db_path) as db:
        names = [d[0] for d in db.execute(query).description]
        cells = ", ".join(
            f"typeof({n}), CASE typeof({n}) WHEN 'blob' THEN '\\x' || lower(hex({n})) ELSE CAST({n} AS TEXT) END"
            for n in names
        )
        rows = db.execute(f"SELECT {cells} FROM ({query})").fetchall()
    out = []
    for row in rows:
        pairs = zip(row[0::2], row[1::2], strict=True)
        out.append(["" if kind == "null" else repr(float(text)) if kind == "real" else text for kind, text in pairs])
    return out


def test_each_column_records_its_declared_type(sqlite_url: URL, tmp_path: Path) -> None:
    staged = extract_to_staging(sqlite_url, "SELECT * FROM movies ORDER BY id", tmp_path / "movies.arrow")
    assert [sql_type(f) for f in staged.schema] == [
        "INTEGER",
        "VARCHAR(200)",
        "DECIMAL(3,1)",
        "INT",
        "DATE",
        "DATETIME",
        "BLOB",
        "BOOLEAN",
    ]
    assert all(f.type == pa.string() for f in staged.schema)
    assert staged.rows == 1003


def test_values_reach_the_csv_as_stored(sqlite_url: URL, tmp_path: Path) -> None:
    query = "SELECT * FROM movies WHERE id < 100 ORDER BY id"
    staged = extract_to_staging(sqlite_url, query, tmp_path / "m.arrow")
    target = tmp_path / "movies.csv"
    write_csv(iter_staged_batches(staged.path), staged.schema, target, CsvOptions())
    with open(target, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["id", "title", "rating", "release_year", "released", "created_at", "poster", "is_active"]
    assert rows == sqlite_text(sqlite_url.database, query)
    # A DECIMAL(3,1) column holding INTEGER 8 stores 8: the value as stored, not a re-scaled one.
    assert [r[2] for r in rows] == ["7.9", "8", ""]


def test_batches_stream_and_reopen_cheaply(sqlite_url: URL, tmp_path: Path) -> None:
    staged = extract_to_staging(sqlite_url, "SELECT id, title FROM movies", tmp_path / "m.arrow", batch_rows=100)
    batches = list(iter_staged_batches(staged.path))
    assert len(batches) == 11
    assert max(b.num_rows for b in batches) == 100
    assert open_staged(staged.path) == staged


def test_a_computed_query_takes_the_storage_class_of_its_values(sqlite_url: URL, tmp_path: Path) -> None:
    query = "SELECT id * 2 AS twice, upper(title) AS loud, rating, poster FROM movies m WHERE id = 1"
    staged = extract_to_staging(sqlite_url, query, tmp_path / "m.arrow")
    assert [sql_type(f) for f in staged.schema] == ["INTEGER", "TEXT", "REAL", "BLOB"]
    assert next(iter_staged_batches(staged.path)).to_pylist() == [
        {"twice": "2", "loud": "AMéLIE, à PARIS", "rating": "7.9", "poster": "\\x00ff"}
    ]


def test_a_failing_query_raises_source_error_and_leaves_no_file(sqlite_url: URL, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no_such_table"):
        extract_to_staging(sqlite_url, "SELECT * FROM no_such_table", tmp_path / "m.arrow")
    assert [p.name for p in tmp_path.iterdir()] == ["source.db"]


def test_a_value_outside_its_declared_type_is_carried_as_stored(sqlite_url: URL, tmp_path: Path) -> None:
    # SQLite lets any column hold any value: the value as stored never aborts a run.
    with sqlite3.connect(sqlite_url.database) as db:
        db.execute("INSERT INTO movies (id, rating, release_year) VALUES (5000, 7.95, 'n/a')")
    query = "SELECT id, rating, release_year FROM movies WHERE id = 5000"
    staged = extract_to_staging(sqlite_url, query, tmp_path / "m.arrow")
    assert next(iter_staged_batches(staged.path)).to_pylist() == [
        {"id": "5000", "rating": "7.95", "release_year": "n/a"}
    ]
