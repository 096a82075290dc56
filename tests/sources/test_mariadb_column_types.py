"""MariaDB -> staged Arrow -> CSV keeps every common column type's value exactly.

The expected text comes from the rows read through a separate client (pymysql) and formatted by
``reference_field`` below, written from the product's CSV contract, not from csv_format.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy.engine import URL

from osiris_dagster.sources.sql_extract import SourceError, extract_to_staging
from osiris_dagster.staging import iter_staged_batches
from osiris_dagster.targets.csv_writer import CsvOptions, write_csv
from tests.conftest import connect_mariadb

pytestmark = pytest.mark.mariadb

COLUMNS = """
  id INT PRIMARY KEY, big BIGINT, price DECIMAL(10,2), rating DECIMAL(3,1), f FLOAT, d DOUBLE,
  released DATE, precise DATETIME(6), created DATETIME, touched TIMESTAMP NULL, runtime TIME,
  active TINYINT(1), title VARCHAR(200), body TEXT, poster BLOB, meta JSON
"""
ROWS = [
    "(1, 9223372036854775807, 12345678.91, 7.9, 1.1, 0.1, '2024-02-29', '2024-01-02 03:04:05.123456',"
    " '2024-01-02 03:04:05', '2024-01-02 03:04:05', '12:34:56', 1, 'Amélie, à Paris', 'line\\nnext \"q\" ü 日本',"
    " X'00FF10', '{\"a\": [1, \"x,y\"]}')",
    "(2, -9223372036854775808, -0.5, 8, -3.5, 1e20, '1000-01-01', '1999-12-31 23:59:59.000001',"
    " '1999-12-31 23:59:59', '1999-12-31 23:59:59', '-838:59:59', 0, 'The \"sequel\"', 'cr\\rhere, comma', X'',"
    " '{}')",
    "(3, 0, 0, 0.0, 0, 0, '2000-01-01', '2000-01-01 00:00:00', '2000-01-01 00:00:00', NULL, '838:59:59', 1,"
    " '', '', X'41', 'null')",
    "(4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
]
FLOAT_COLUMNS = {"f", "d"}


def reference_field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + (f".{value.microsecond:06d}" if value.microsecond else "")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        sign, micros = ("-" if micros < 0 else ""), abs(micros)
        seconds, fraction = divmod(micros, 1_000_000)
        text = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return text + (f".{fraction:06d}" if fraction else "")
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, decimal.Decimal):
        return str(value)  # pymysql keeps the server's text, so the scale is the column's
    return str(value)


@pytest.fixture
def movies(mariadb_url: URL) -> URL:
    connection = connect_mariadb(mariadb_url.database)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE movies ({COLUMNS}) CHARACTER SET utf8mb4")
        cursor.execute("INSERT INTO movies VALUES " + ", ".join(ROWS))
    connection.close()
    return mariadb_url


def reference_rows(url: URL, query: str) -> tuple[list[str], list[tuple]]:
    connection = connect_mariadb(url.database)
    with connection.cursor() as cursor:
        cursor.execute(query)
        names = [d[0] for d in cursor.description]
        rows = list(cursor.fetchall())
    connection.close()
    return names, rows


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def assert_same_values(path: Path, names: list[str], rows: list[tuple]) -> None:
    header, *written = csv_rows(path)
    assert header == names
    assert len(written) == len(rows)
    for written_row, source_row in zip(written, rows, strict=True):
        for name, text, value in zip(names, written_row, source_row, strict=True):
            if name in FLOAT_COLUMNS and value is not None:
                assert float(text) == pytest.approx(value, rel=1e-7), (source_row[0], name)
            else:
                assert text == reference_field(value), (source_row[0], name, text, value)


def test_every_common_type_reaches_the_csv_exactly(movies: URL, tmp_path: Path) -> None:
    query = "SELECT * FROM movies ORDER BY id"
    staged = extract_to_staging(movies, query, tmp_path / "movies.arrow")
    assert staged.rows == 4
    assert staged.schema.field("price").type == pa.decimal128(10, 2)
    assert staged.schema.field("rating").type == pa.decimal128(3, 1)
    assert staged.schema.field("active").type == pa.int8()
    assert staged.schema.field("runtime").type == pa.duration("us")
    assert staged.schema.field("poster").type == pa.binary()
    assert staged.schema.field("meta").type == pa.string()
    assert staged.schema.field("f").type == pa.float32()
    target = tmp_path / "movies.csv"
    result = write_csv(iter_staged_batches(staged.path), staged.schema, target, CsvOptions())
    assert result.rows == 4
    assert_same_values(target, *reference_rows(movies, query))
    # Spot-check the contract's headline values in the raw text too.
    text = target.read_text(encoding="utf-8")
    assert ",7.9," in text and ",8.0," in text and "-838:59:59" in text and "\\x00ff10" in text


def test_order_by_survives_the_exact_type_wrapper(movies: URL, tmp_path: Path) -> None:
    query = "SELECT id, rating, runtime FROM movies ORDER BY id DESC"
    staged = extract_to_staging(movies, query, tmp_path / "m.arrow")
    ids = [i for b in iter_staged_batches(staged.path) for i in b.column("id").to_pylist()]
    assert ids == [4, 3, 2, 1]


def test_the_generic_fallback_gives_the_same_csv(movies: URL, tmp_path: Path) -> None:
    # GEOMETRY is a type connectorx cannot read: the whole query takes the generic path.
    query = "SELECT m.*, ST_GeomFromText('POINT(1 1)') AS shape FROM movies m ORDER BY id"
    staged = extract_to_staging(movies, query, tmp_path / "m.arrow")
    target = tmp_path / "fallback.csv"
    write_csv(iter_staged_batches(staged.path), staged.schema, target, CsvOptions())
    names, rows = reference_rows(movies, query)
    assert_same_values(target, names, rows)


def test_a_table_bigger_than_a_batch_is_streamed_in_batches(mariadb_url: URL, tmp_path: Path) -> None:
    connection = connect_mariadb(mariadb_url.database)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE n (id INT PRIMARY KEY, v DECIMAL(6,2), s VARCHAR(20))")
        cursor.execute("INSERT INTO n SELECT seq, seq / 100, CONCAT('row ', seq) FROM seq_1_to_5000")
    connection.close()
    staged = extract_to_staging(mariadb_url, "SELECT * FROM n ORDER BY id", tmp_path / "n.arrow", batch_rows=1000)
    batches = list(iter_staged_batches(staged.path))
    assert staged.rows == 5000
    assert len(batches) == 5 and max(b.num_rows for b in batches) == 1000
    target = tmp_path / "n.csv"
    write_csv(iter(batches), staged.schema, target, CsvOptions())
    assert_same_values(target, *reference_rows(mariadb_url, "SELECT * FROM n ORDER BY id"))


def test_wrong_password_never_reaches_the_error(mariadb_url: URL, tmp_path: Path) -> None:
    secret = "s3cret-Pa55word"
    url = mariadb_url.set(password=secret)
    with pytest.raises(SourceError) as raised:
        extract_to_staging(url, "SELECT 1", tmp_path / "x.arrow")
    assert secret not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []


def test_a_bad_query_is_a_source_error_and_leaves_no_file(movies: URL, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no_such_column"):
        extract_to_staging(movies, "SELECT no_such_column FROM movies", tmp_path / "x.arrow")
    assert list(tmp_path.iterdir()) == []
