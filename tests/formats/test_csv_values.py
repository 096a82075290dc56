"""CSV quoting of staged text, field by field, with exact expected text."""

from __future__ import annotations

import pyarrow as pa
import pytest

from osiris_dagster.formats.csv_values import CsvOptions, format_column, format_header, format_rows, rows_as_bytes

MINIMAL = CsvOptions()


def fields(values: list, arrow_type: pa.DataType, options: CsvOptions = MINIMAL) -> list[str | None]:
    return format_column(pa.array(values, type=arrow_type), options).to_pylist()


def test_null_stays_null_and_text_is_unchanged() -> None:
    # Staged cells are the source's own text: formatting never rewrites a value.
    values = ["7.90", "0000-00-00", "-838:59:59.999", "1e-320", "\\x00ff", "{1;NULL}", " edge ", None]
    assert fields(values, pa.string()) == values
    assert fields(values, pa.large_string()) == values
    assert fields([None, None], pa.null()) == [None, None]


def test_text_is_quoted_only_when_it_must_be() -> None:
    values = ["plain", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "", "héllo ü 日本"]
    assert fields(values, pa.string()) == [
        "plain",
        '"a,b"',
        '"say ""hi"""',
        '"line\nbreak"',
        '"cr\rhere"',
        "",
        "héllo ü 日本",
    ]


def test_quoting_follows_the_delimiter() -> None:
    semicolon = CsvOptions(delimiter=";")
    assert fields(["a,b", "a;b"], pa.string(), semicolon) == ["a,b", '"a;b"']
    # Even a number or timestamp is quoted when the delimiter is one of its characters.
    space = CsvOptions(delimiter=" ")
    assert fields(["2024-01-02 03:04:05"], pa.string(), space) == ['"2024-01-02 03:04:05"']
    dot = CsvOptions(delimiter=".")
    assert fields(["7.9"], pa.string(), dot) == ['"7.9"']


def test_quoting_all_quotes_every_non_null_field() -> None:
    every = CsvOptions(quoting="all")
    assert fields(["1", None], pa.string(), every) == ['"1"', None]
    assert fields(['x"y', ""], pa.string(), every) == ['"x""y"', '""']


def test_header_uses_the_same_quoting_rule() -> None:
    assert format_header(["id", "a,b", 'q"'], MINIMAL) == 'id,"a,b","q"""\n'
    assert format_header(["id", "x"], CsvOptions(quoting="all", newline="crlf")) == '"id","x"\r\n'


def test_rows_join_fields_with_delimiter_and_terminator() -> None:
    batch = pa.record_batch({"a": pa.array(["1", None]), "b": pa.array(["x,y", None]), "c": pa.array([None, "2.5"])})
    assert bytes(rows_as_bytes(format_rows(batch, MINIMAL))) == b'1,"x,y",\n,,2.5\n'
    crlf_tab = CsvOptions(delimiter="\t", newline="crlf")
    assert bytes(rows_as_bytes(format_rows(batch, crlf_tab))) == b"1\tx,y\t\r\n\t\t2.5\r\n"


def test_rows_of_a_sliced_batch_are_only_that_slice() -> None:
    batch = pa.record_batch({"a": pa.array(["r0", "r1", "r2"])})
    assert bytes(rows_as_bytes(format_rows(batch.slice(1, 1), MINIMAL))) == b"r1\n"


@pytest.mark.parametrize("delimiter", ["", ",,", '"', "\n"])
def test_unusable_delimiters_are_refused(delimiter: str) -> None:
    with pytest.raises(ValueError, match="delimiter"):
        CsvOptions(delimiter=delimiter)


def test_typed_columns_are_refused_by_name() -> None:
    # A typed column would need formats invented here; staging only ever holds text.
    with pytest.raises(TypeError, match="int64"):
        format_column(pa.array([1]), MINIMAL)
