"""The C CSV formatter (``csv_lines``) writes what Python's ``csv`` module writes for the same cells.

Expected bytes come from ``csv.writer`` (QUOTE_MINIMAL / QUOTE_NONNULL-like "all"), not from the
product; the pyarrow kernels (``format_rows``, the reference and fallback) must agree too.
"""

from __future__ import annotations

import csv
import io
import random
import subprocess
import sys
import threading

import pyarrow as pa
import pytest

from osiris_dagster.formats import csv_values
from osiris_dagster.formats.csv_values import CsvOptions, csv_lines, format_rows, rows_as_bytes
from osiris_dagster.staging import text_schema

# Characters that matter to quoting, plus multibyte text and edge spaces.
_ALPHABET = ["a", "Z", "0", " ", ",", ";", "\t", '"', "\r", "\n", "é", "日", "😀", "-", ".", ":", "|", "\\"]


def python_csv(rows: list[list[str | None]], options: CsvOptions) -> bytes:
    """Python's csv module; NULL is an empty field, and with "all" only non-NULL fields are quoted."""
    out = io.StringIO(newline="")
    if options.quoting == "all":
        # csv.QUOTE_ALL would quote NULL too; the contract keeps NULL an empty, unquoted field.
        for row in rows:
            out.write(
                options.delimiter.join("" if v is None else '"' + v.replace('"', '""') + '"' for v in row)
                + options.line_terminator
            )
    else:
        # Python 3.11's csv quotes CR or LF only when its line terminator holds them; the contract
        # (RFC 4180) quotes both always, so the reference decides quoting with "\r\n".
        for row in rows:
            if len(row) == 1 and row[0] in ("", None):
                out.write(options.line_terminator)  # csv writes '""' for a lone empty field
                continue
            line = io.StringIO(newline="")
            csv.writer(line, delimiter=options.delimiter, lineterminator="\r\n").writerow(
                ["" if v is None else v for v in row]
            )
            out.write(line.getvalue()[:-2] + options.line_terminator)
    return out.getvalue().encode("utf-8")


def random_rows(rng: random.Random, count: int, width: int) -> list[list[str | None]]:
    def cell() -> str | None:
        if rng.random() < 0.1:
            return None
        length = rng.choice([0, 1, 2, 5, 15, 16, 17, 31, 33, 80])  # around the 16-byte scan steps
        return "".join(rng.choice(_ALPHABET) for _ in range(length))

    return [[cell() for _ in range(width)] for _ in range(count)]


def as_batch(rows: list[list[str | None]], width: int, sql_types: list[str] | None = None) -> pa.RecordBatch:
    schema = text_schema([(f"c{i}", (sql_types or [""] * width)[i]) for i in range(width)], "sqlite")
    columns = [pa.array([row[i] for row in rows], pa.string()) for i in range(width)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


OPTIONS = [
    CsvOptions(),
    CsvOptions(delimiter=";"),
    CsvOptions(delimiter="\t", newline="crlf"),
    CsvOptions(delimiter="|", quoting="all"),
    CsvOptions(delimiter=" "),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"{o.delimiter!r}-{o.quoting}-{o.newline}")
def test_random_cells_match_pythons_csv_module_and_the_pyarrow_kernels(options: CsvOptions) -> None:
    assert csv_values._native_formatter() is not None, "the C formatter is not built (pip install -e .)"
    rng = random.Random(20261206)
    for width in (1, 2, 7):
        rows = random_rows(rng, 600, width)
        batch = as_batch(rows, width)
        expected = python_csv(rows, options)
        assert bytes(csv_lines(batch, options)) == expected
        assert bytes(rows_as_bytes(format_rows(batch, options))) == expected
        # A slice starts at an offset into the arrays' buffers (the writer slices large batches).
        piece = batch.slice(137, 211)
        assert bytes(csv_lines(piece, options)) == python_csv(rows[137:348], options)


def test_a_column_whose_type_cannot_hold_the_delimiter_is_copied_as_is() -> None:
    """MySQL INT text holds digits and '-': with ',' it is never scanned, with '-' it must be."""
    rows = [["-12", "a,b"], ["7", None], [None, 'q"']]
    schema = text_schema([("n", "INT"), ("s", "VARCHAR(9)")], "mysql")
    batch = pa.RecordBatch.from_arrays([pa.array([r[i] for r in rows], pa.string()) for i in range(2)], schema=schema)
    assert bytes(csv_lines(batch, CsvOptions())) == python_csv(rows, CsvOptions())
    dash = CsvOptions(delimiter="-")
    assert bytes(csv_lines(batch, dash)) == python_csv(rows, dash) == b'"-12"-a,b\n7-\n-"q"""\n'


def test_a_delimiter_outside_ascii_takes_the_kernels_with_the_same_rules() -> None:
    rows = [["a§b", "c"], [None, '"']]
    options = CsvOptions(delimiter="§")
    assert bytes(csv_lines(as_batch(rows, 2), options)) == python_csv(rows, options)


def test_empty_batches_and_all_null_columns() -> None:
    assert bytes(csv_lines(as_batch([], 3), CsvOptions())) == b""
    nulls = pa.RecordBatch.from_arrays([pa.nulls(3, pa.string()), pa.array(["x", "", None])], names=["a", "b"])
    assert bytes(csv_lines(nulls, CsvOptions())) == b",x\n,\n,\n"
    assert bytes(csv_lines(nulls, CsvOptions(quoting="all"))) == b',"x"\n,""\n,\n'


def test_batches_formatted_on_threads_at_once_are_each_right() -> None:
    """The writer formats slices on a thread pool with the GIL released: no shared state."""
    rng = random.Random(7)
    batches = [as_batch(rows, 4) for rows in (random_rows(rng, 3000, 4) for _ in range(4))]
    expected = [python_csv([list(r.values()) for r in b.to_pylist()], CsvOptions()) for b in batches]
    results: list[bytes] = [b""] * len(batches)

    def work(index: int) -> None:
        for _ in range(20):
            results[index] = bytes(csv_lines(batches[index], CsvOptions()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected


def test_buffers_that_lie_about_their_rows_are_refused_not_read() -> None:
    """Offsets pointing past the values, or buffers shorter than the rows, raise instead of reading
    outside them (run in a child process: a bad read would crash the interpreter)."""
    code = r"""
from osiris_dagster.formats import _csv_rows
import struct
offsets = struct.pack("<3i", 0, 2, 1000)  # the second value ends far past the 4 bytes of values
for args in [
    ([(None, offsets, b"abcd", 0, True)], 2, 44, b"\n", False),
    ([(None, offsets, b"abcd", 0, True)], 5, 44, b"\n", False),            # more rows than offsets
    ([(b"\x00", struct.pack("<2i", 0, 1), b"a", 0, True)], 9, 44, b"\n", False),  # short validity
    ([(None, struct.pack("<2i", 5, 1), b"abcdef", 0, True)], 1, 44, b"\n", False),  # end before start
    ([(None, struct.pack("<2i", 0, 1), b"a", 0, True)], 1, 34, b"\n", False),  # '"' as delimiter
]:
    try:
        _csv_rows.format_rows(*args)
    except ValueError as exc:
        print("refused:", exc)
    else:
        print("accepted")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused:") == 5, done.stdout
