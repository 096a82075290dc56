"""Every MariaDB value reaches the CSV exactly as the server's text protocol gives it.

The expected text is read in the same test through the raw text protocol (pymysql with every
decoder removed: the bytes the server sent, decoded as UTF-8), with only the contract's two
documented exceptions applied (binary -> ``\\x`` hex, BIT -> digits). It is quoted with Python's
``csv`` module, not with the product's code. Both read paths (the C row reader, and pymysql
forced with ``OSIRIS_MYSQL_PATH=generic``) must give the same bytes.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pymysql
import pymysql.converters
import pytest
from sqlalchemy.engine import URL

from osiris_dagster.sources.mysql_reader import FORCE_PATH_ENV
from osiris_dagster.sources.sql_extract import SourceError, extract_to_staging
from osiris_dagster.staging import iter_staged_batches, sql_type
from osiris_dagster.targets.csv_writer import CsvOptions, write_csv
from tests.conftest import connect_mariadb
from tests.sources.corpus import MARIADB_COLUMNS, distinct_cells, rows_sql

pytestmark = pytest.mark.mariadb

_BIT, _GEOMETRY = 16, 255
_STRING_TYPES = {15, 249, 250, 251, 252, 253, 254}
_BINARY_CHARSET = 63


def create_corpus(database: str) -> None:
    create, insert = rows_sql("corpus", MARIADB_COLUMNS)
    connection = connect_mariadb(database)
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = ''")  # a permissive legacy server: zero dates allowed
        cursor.execute(create + " CHARACTER SET utf8mb4")
        cursor.execute(insert)
    connection.close()


def server_text(database: str, query: str) -> tuple[list[str], list[list[str | None]]]:
    """The raw text protocol's cells (the contract's two exceptions applied)."""
    encoders = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}
    connection = pymysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", database=database, charset="utf8mb4", conv=encoders
    )
    with connection.cursor() as cursor:
        cursor.execute(query)
        fields = cursor._result.fields
        rows = cursor.fetchall()
    connection.close()
    out = []
    for row in rows:
        cells: list[str | None] = []
        for field, value in zip(fields, row, strict=True):
            if value is None or isinstance(value, str):
                cells.append(value)
            elif field.type_code == _BIT:
                cells.append(str(int.from_bytes(value, "big")))
            else:
                assert field.type_code in _STRING_TYPES | {_GEOMETRY} and field.charsetnr == _BINARY_CHARSET
                cells.append("\\x" + value.hex())
        out.append(cells)
    return [f.name for f in fields], out


def expected_csv(names: list[str], rows: list[list[str | None]], delimiter: str = ",") -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n", delimiter=delimiter)
    writer.writerow(names)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue().encode("utf-8")


def product_csv(url: URL, query: str, tmp_path: Path, name: str, options: CsvOptions | None = None) -> bytes:
    staged = extract_to_staging(url, query, tmp_path / f"{name}.arrow")
    target = tmp_path / f"{name}.csv"
    write_csv(iter_staged_batches(staged.path), staged.schema, target, options or CsvOptions())
    return target.read_bytes()


QUERY = "SELECT * FROM corpus ORDER BY id"


def test_every_cell_is_the_servers_text_on_both_read_paths(
    mariadb_url: URL,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_corpus(mariadb_url.database)
    names, rows = server_text(mariadb_url.database, QUERY)
    assert distinct_cells(names, rows) >= 60
    expected = expected_csv(names, rows)

    fast = product_csv(mariadb_url, QUERY, tmp_path, "fast")
    monkeypatch.setenv(FORCE_PATH_ENV, "generic")
    generic = product_csv(mariadb_url, QUERY, tmp_path, "generic")

    for path_name, produced in (("C row reader", fast), ("generic", generic)):
        mismatches = _mismatches(produced, expected)
        assert not mismatches, f"{path_name}: {len(mismatches)} mismatching cells: {mismatches[:10]}"
    assert fast == generic == expected
    captured = capfd.readouterr()
    assert "panicked at" not in captured.out + captured.err
    # The fast path took the whole corpus: a fallback would be a log record (under pytest a record
    # reaches no console, so the console alone could not show it).
    assert not [record for record in caplog.records if "pymysql" in record.getMessage()]


def test_quoting_all_quotes_every_value_and_leaves_null_empty(mariadb_url: URL, tmp_path: Path) -> None:
    create_corpus(mariadb_url.database)
    _, rows = server_text(mariadb_url.database, QUERY)
    produced = product_csv(mariadb_url, QUERY, tmp_path, "all", CsvOptions(quoting="all", header=False))
    expected = "".join(
        ",".join("" if v is None else '"' + v.replace('"', '""') + '"' for v in row) + "\n" for row in rows
    )
    assert produced == expected.encode("utf-8")


@pytest.mark.parametrize("delimiter", [" ", ".", "-", ":", "e", "a", "\t", ";"])
def test_any_delimiter_is_quoted_wherever_a_value_holds_it(mariadb_url: URL, tmp_path: Path, delimiter: str) -> None:
    # Number and date columns skip the quoting scan when their text cannot hold the delimiter: a
    # delimiter that their text can hold must still be quoted, exactly where Python's csv quotes it.
    create_corpus(mariadb_url.database)
    produced = product_csv(mariadb_url, QUERY, tmp_path, "d", CsvOptions(delimiter=delimiter))
    assert produced == expected_csv(*server_text(mariadb_url.database, QUERY), delimiter=delimiter)


def test_each_column_records_its_source_sql_type(mariadb_url: URL, tmp_path: Path) -> None:
    create_corpus(mariadb_url.database)
    staged = extract_to_staging(mariadb_url, QUERY, tmp_path / "c.arrow")
    types = {field.name: sql_type(field) for field in staged.schema}
    # What the server's own catalogue says, in the same words.
    connection = connect_mariadb(mariadb_url.database)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, UPPER(column_type) FROM information_schema.columns WHERE table_name = 'corpus'"
        )
        declared = dict(cursor.fetchall())
    connection.close()
    for name in ("ti", "bu", "d65", "d31", "du", "dt3", "dt6", "ts2", "tm3", "b64", "vb"):
        # Integer display widths (INT(11)) are not part of the type; TINYINT(1) is (BOOLEAN).
        assert types[name] == re.sub(r"INT\(\d+\)", "INT", declared[name]), name
    assert types["flag"] == "TINYINT(1)" and types["dbl"] == "DOUBLE" and types["dte"] == "DATE"


def test_the_query_is_sent_as_written_so_its_order_holds(mariadb_url: URL, tmp_path: Path) -> None:
    create_corpus(mariadb_url.database)
    staged = extract_to_staging(mariadb_url, "SELECT id, d31 FROM corpus ORDER BY id DESC", tmp_path / "m.arrow")
    ids = [i for b in iter_staged_batches(staged.path) for i in b.column("id").to_pylist()]
    assert ids == sorted(ids, key=int, reverse=True) and len(ids) == 12


def test_a_table_bigger_than_a_batch_is_streamed_in_batches(mariadb_url: URL, tmp_path: Path) -> None:
    connection = connect_mariadb(mariadb_url.database)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE n (id INT PRIMARY KEY, v DECIMAL(6,2), s VARCHAR(20))")
        cursor.execute("INSERT INTO n SELECT seq, seq / 100, CONCAT('row ', seq) FROM seq_1_to_5000")
    connection.close()
    query = "SELECT * FROM n ORDER BY id"
    staged = extract_to_staging(mariadb_url, query, tmp_path / "n.arrow", batch_rows=1000)
    batches = list(iter_staged_batches(staged.path))
    assert staged.rows == 5000
    assert len(batches) == 5 and max(b.num_rows for b in batches) == 1000
    target = tmp_path / "n.csv"
    write_csv(iter(batches), staged.schema, target, CsvOptions())
    assert target.read_bytes() == expected_csv(*server_text(mariadb_url.database, query))


def test_wrong_password_never_reaches_the_error(mariadb_url: URL, tmp_path: Path) -> None:
    secret = "s3cret-Pa55word"
    url = mariadb_url.set(password=secret)
    with pytest.raises(SourceError) as raised:
        extract_to_staging(url, "SELECT 1", tmp_path / "x.arrow")
    assert secret not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []


def test_a_bad_query_is_a_source_error_and_leaves_no_file(mariadb_url: URL, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no_such_column"):
        extract_to_staging(mariadb_url, "SELECT no_such_column FROM dual", tmp_path / "x.arrow")
    assert list(tmp_path.iterdir()) == []


def _mismatches(produced: bytes, expected: bytes) -> list[tuple[int, int, str, str]]:
    got = list(csv.reader(io.StringIO(produced.decode("utf-8"), newline="")))
    want = list(csv.reader(io.StringIO(expected.decode("utf-8"), newline="")))
    out = []
    for r, (a, b) in enumerate(zip(got, want, strict=False)):
        for c, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                out.append((r, c, x, y))
    if len(got) != len(want):
        out.append((-1, -1, f"{len(got)} rows", f"{len(want)} rows"))
    return out


def test_an_incremental_append_gives_the_same_bytes_as_one_full_write(mariadb_url: URL, tmp_path: Path) -> None:
    """Two increments (cursor: id, typed from the staged text and its INT type) append to the file
    the full extraction writes in one go, byte for byte."""
    from osiris_dagster.sources.incremental import incremental_query, rows_after, staged_cursor_max
    from osiris_dagster.targets.csv_append import append_csv

    create_corpus(mariadb_url.database)
    base = "SELECT * FROM corpus"
    target, committed, after = tmp_path / "appended.csv", None, None
    connection = connect_mariadb(mariadb_url.database)
    for cutoff in (6, None):  # the first run sees ids 1-6; rows 7.. arrive before the second run
        if cutoff is not None:
            with connection.cursor() as cursor:
                cursor.execute("CREATE TABLE later AS SELECT * FROM corpus WHERE id > %s", [cutoff])
                cursor.execute("DELETE FROM corpus WHERE id > %s", [cutoff])
        else:
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION sql_mode = ''")
                cursor.execute("INSERT INTO corpus SELECT * FROM later")
        staged = extract_to_staging(
            mariadb_url, incremental_query(mariadb_url, base, "id", after), tmp_path / f"inc{cutoff}.arrow"
        )
        result = append_csv(
            rows_after(iter_staged_batches(staged.path), "id", after),
            staged.schema,
            target,
            CsvOptions(),
            committed_bytes=committed,
        )
        committed, after = result.bytes, staged_cursor_max(staged.path, "id")
    connection.close()
    assert after == 12
    assert target.read_bytes() == expected_csv(*server_text(mariadb_url.database, QUERY))
