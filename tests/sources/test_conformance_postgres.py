"""Every PostgreSQL value reaches the CSV exactly as ``COPY (query) TO STDOUT (FORMAT csv)`` writes it.

The expected bytes come from the server in the same test: ``COPY ... (FORMAT csv, FORCE_QUOTE *)``
quotes every non-NULL value and leaves NULL empty, which is the product's ``quoting: all``; so the
two files must be byte-identical. The database's default time zone is set to a non-UTC zone, so
``timestamptz`` is checked in the session time zone both sides use.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from osiris_dagster.sources.sql_extract import SourceError, extract_to_staging
from osiris_dagster.staging import iter_staged_batches, sql_type
from osiris_dagster.targets.csv_writer import CsvOptions, write_csv
from tests.sources.corpus import POSTGRES_COLUMNS, POSTGRES_SETUP, distinct_cells, rows_sql

pytestmark = pytest.mark.postgres

QUERY = "SELECT * FROM corpus ORDER BY id"


def conninfo(database: str) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={database}"


@pytest.fixture
def corpus_url(postgres_database: str) -> URL:
    create, insert = rows_sql("corpus", POSTGRES_COLUMNS)
    with psycopg.connect(conninfo(postgres_database), autocommit=True) as connection:
        connection.execute(f"ALTER DATABASE \"{postgres_database}\" SET TimeZone = 'Asia/Kolkata'")
        connection.execute(POSTGRES_SETUP)
        connection.execute(create)
        connection.execute(insert)
    return URL.create(
        "postgresql+psycopg", username="postgres", host="127.0.0.1", port=5432, database=postgres_database
    )


def copy_csv(database: str, query: str, options: str) -> bytes:
    with psycopg.connect(conninfo(database)) as connection, connection.cursor() as cursor:
        buffer = io.BytesIO()
        with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, {options})") as copy:
            for chunk in copy:
                buffer.write(chunk)
    return buffer.getvalue()


def product_csv(url: URL, query: str, tmp_path: Path, options: CsvOptions) -> bytes:
    staged = extract_to_staging(url, query, tmp_path / "corpus.arrow", batch_rows=4)
    target = tmp_path / "corpus.csv"
    write_csv(iter_staged_batches(staged.path), staged.schema, target, options)
    return target.read_bytes()


def test_every_cell_is_what_copy_to_stdout_writes(corpus_url: URL, tmp_path: Path) -> None:
    expected = copy_csv(corpus_url.database, QUERY, "FORCE_QUOTE *")
    rows = list(csv.reader(io.StringIO(expected.decode("utf-8"), newline="")))
    names = [c.split()[0] for c in ["id", *(d for d, _ in POSTGRES_COLUMNS)]]
    assert distinct_cells(names, rows) >= 60
    produced = product_csv(corpus_url, QUERY, tmp_path, CsvOptions(quoting="all", header=False))
    got = list(csv.reader(io.StringIO(produced.decode("utf-8"), newline="")))
    mismatches = [
        (r, names[c], x, y)
        for r, (a, b) in enumerate(zip(got, rows, strict=True))
        for c, (x, y) in enumerate(zip(a, b, strict=True))
        if x != y
    ]
    assert not mismatches, mismatches[:10]
    assert produced == expected
    # The headline values of the issue, as the server printed them.
    text = produced.decode("utf-8")
    for value in ('"infinity"', '"24:00:00"', '"-1 mons +3 days -00:00:01.5"', '"null"', '"NaN"', '"1.50"', "+05:30"):
        assert value in text, value


def test_minimal_quoting_reads_back_to_the_same_cells(corpus_url: URL, tmp_path: Path) -> None:
    # COPY quotes an empty string (""), minimal quoting does not; the cells are the same otherwise.
    expected = copy_csv(corpus_url.database, QUERY, "HEADER")
    produced = product_csv(corpus_url, QUERY, tmp_path, CsvOptions())
    assert list(csv.reader(io.StringIO(produced.decode(), newline=""))) == list(
        csv.reader(io.StringIO(expected.decode(), newline=""))
    )


@pytest.mark.parametrize("delimiter", [" ", ".", "-", ":", "+", "a", "N", "t", "\t"])
def test_any_delimiter_is_quoted_wherever_a_value_holds_it(corpus_url: URL, tmp_path: Path, delimiter: str) -> None:
    # COPY quotes by the same rule as minimal quoting, plus empty strings: equal cells once parsed
    # with the delimiter means every value holding it was quoted.
    escaped = delimiter.replace("'", "''")
    expected = copy_csv(corpus_url.database, QUERY, f"HEADER, DELIMITER E'{escaped}'")
    produced = product_csv(corpus_url, QUERY, tmp_path, CsvOptions(delimiter=delimiter))
    parse = lambda data: list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=delimiter))  # noqa: E731
    assert parse(produced) == parse(expected)


def test_each_column_records_its_source_sql_type(corpus_url: URL, tmp_path: Path) -> None:
    staged = extract_to_staging(corpus_url, QUERY, tmp_path / "c.arrow")
    with psycopg.connect(conninfo(corpus_url.database)) as connection:
        declared = dict(
            connection.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'corpus'::regclass AND attnum > 0"
            ).fetchall()
        )
    assert {field.name: sql_type(field) for field in staged.schema} == declared


def test_wrong_password_never_reaches_the_error(corpus_url: URL, tmp_path: Path) -> None:
    secret = "s3cret-Pa55word"
    url = corpus_url.set(username="nobody_here", password=secret)
    with pytest.raises(SourceError) as raised:
        extract_to_staging(url, "SELECT 1", tmp_path / "x.arrow")
    assert secret not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []


def test_a_bad_query_is_a_source_error_and_leaves_no_file(corpus_url: URL, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no_such_column"):
        extract_to_staging(corpus_url, "SELECT no_such_column FROM corpus", tmp_path / "x.arrow")
    assert list(tmp_path.iterdir()) == []
