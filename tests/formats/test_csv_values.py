"""The CSV value contract, value by value, with exact expected text."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from osiris_dagster.formats.csv_values import CsvOptions, format_column, format_header, format_rows, rows_as_bytes

MINIMAL = CsvOptions()


def fields(values: list, arrow_type: pa.DataType, options: CsvOptions = MINIMAL) -> list[str | None]:
    return format_column(pa.array(values, type=arrow_type), options).to_pylist()


def test_null_stays_null_in_every_type() -> None:
    types = [
        pa.int8(), pa.int64(), pa.uint64(), pa.float32(), pa.float64(), pa.decimal128(3, 1), pa.bool_(),
        pa.date32(), pa.timestamp("us"), pa.time64("us"), pa.duration("us"), pa.string(), pa.binary(),
        pa.decimal256(50, 5), pa.timestamp("us", tz="UTC"),
    ]  # fmt: skip
    for arrow_type in types:
        assert fields([None], arrow_type) == [None], arrow_type


def test_integers_and_booleans_are_digits() -> None:
    assert fields([0, -128, 127], pa.int8()) == ["0", "-128", "127"]
    assert fields([2**63 - 1, -(2**63)], pa.int64()) == ["9223372036854775807", "-9223372036854775808"]
    assert fields([2**64 - 1], pa.uint64()) == ["18446744073709551615"]
    assert fields([True, False], pa.bool_()) == ["1", "0"]


def test_decimal_keeps_exactly_the_source_scale() -> None:
    assert fields([Decimal("7.9"), Decimal("8"), Decimal("-0.5")], pa.decimal128(3, 1)) == ["7.9", "8.0", "-0.5"]
    assert fields([Decimal("12345678.91"), Decimal("0")], pa.decimal128(10, 2)) == ["12345678.91", "0.00"]
    assert fields([Decimal("42")], pa.decimal128(5, 0)) == ["42"]
    big = Decimal("1234567890123456789012345678901234567890.12345")
    assert fields([big], pa.decimal256(45, 5)) == [str(big)]


def test_floats_are_shortest_round_trip() -> None:
    values = [0.1, 1.5, -2.25, 1e20, 1.5e-7, 123456789.125]
    out = fields(values, pa.float64())
    assert out[:3] == ["0.1", "1.5", "-2.25"]
    assert [float(v) for v in out] == values
    # A FLOAT (float32) 1.1 is written as 1.1, not as its float64 widening 1.100000023841858.
    assert fields([1.1, 0.1], pa.float32()) == ["1.1", "0.1"]


def test_dates_and_timestamps_show_a_fraction_only_when_there_is_one() -> None:
    assert fields([dt.date(2024, 2, 29), dt.date(1, 1, 1)], pa.date32()) == ["2024-02-29", "0001-01-01"]
    stamps = [
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.datetime(2024, 1, 2, 3, 4, 5, 120000),
        dt.datetime(1969, 12, 31, 23, 59, 59, 1),
    ]
    assert fields(stamps, pa.timestamp("us")) == [
        "2024-01-02 03:04:05",
        "2024-01-02 03:04:05.120000",
        "1969-12-31 23:59:59.000001",
    ]
    # A column without any fraction takes the short path; the same rule.
    assert fields(stamps[:1], pa.timestamp("us")) == ["2024-01-02 03:04:05"]
    assert fields(stamps[:1], pa.timestamp("s")) == ["2024-01-02 03:04:05"]
    aware = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert fields([aware], pa.timestamp("us", tz="UTC")) == ["2024-01-02 03:04:05+00:00"]


def test_time_of_day_and_mysql_time_durations() -> None:
    assert fields([dt.time(1, 2, 3), dt.time(23, 59, 59, 500)], pa.time64("us")) == ["01:02:03", "23:59:59.000500"]
    micros = [0, 45_296_500_000, -3_020_399_000_000, 3_020_399_000_000, -1]
    assert fields(micros, pa.duration("us")) == [
        "00:00:00",
        "12:34:56.500000",
        "-838:59:59",
        "838:59:59",
        "-00:00:00.000001",
    ]


def test_binary_is_postgres_bytea_hex() -> None:
    assert fields([b"\x00\xff\x10", b""], pa.binary()) == ["\\x00ff10", "\\x"]


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
    assert fields([dt.datetime(2024, 1, 2, 3, 4, 5)], pa.timestamp("us"), space) == ['"2024-01-02 03:04:05"']
    dot = CsvOptions(delimiter=".")
    assert fields([Decimal("7.9")], pa.decimal128(3, 1), dot) == ['"7.9"']


def test_quoting_all_quotes_every_non_null_field() -> None:
    every = CsvOptions(quoting="all")
    assert fields([1, None], pa.int64(), every) == ['"1"', None]
    assert fields(['x"y', ""], pa.string(), every) == ['"x""y"', '""']


def test_header_uses_the_same_quoting_rule() -> None:
    assert format_header(["id", "a,b", 'q"'], MINIMAL) == 'id,"a,b","q"""\n'
    assert format_header(["id", "x"], CsvOptions(quoting="all", newline="crlf")) == '"id","x"\r\n'


def test_rows_join_fields_with_delimiter_and_terminator() -> None:
    batch = pa.record_batch({"a": pa.array([1, None]), "b": pa.array(["x,y", None]), "c": pa.array([None, 2.5])})
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


def test_types_without_a_csv_form_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="list"):
        format_column(pa.array([[1]]), MINIMAL)
