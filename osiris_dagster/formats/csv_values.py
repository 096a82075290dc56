"""The product's CSV value contract: how one Arrow column becomes CSV text.

Every rule a reader of our CSV files relies on lives here, as pure functions over Arrow arrays:

* NULL -> empty field; integers as digits; booleans as ``0``/``1``;
* DECIMAL exactly at its declared scale (``decimal128(3,1)`` 8 -> ``8.0``, never ``8.0000000000``);
* FLOAT/DOUBLE as the shortest text that round-trips (``0.1``, ``1e+20``, ``nan``, ``inf``);
* DATE ``YYYY-MM-DD``; TIMESTAMP ``YYYY-MM-DD HH:MM:SS`` plus ``.ffffff`` only when the value has a
  non-zero fraction; time zone aware timestamps are written as UTC wall time + ``+00:00``;
* TIME ``HH:MM:SS[.ffffff]``; a duration (how MySQL ``TIME`` is staged, since it spans
  -838:59:59..838:59:59) ``[-]HH:MM:SS[.ffffff]`` with as many hour digits as needed;
* binary as PostgreSQL ``bytea`` hex (``\\x`` + lowercase hex), so the file loads straight into
  PostgreSQL with ``COPY ... CSV``;
* RFC 4180 quoting: ``minimal`` quotes only a field containing the delimiter, ``"``, CR or LF;
  ``all`` quotes every non-NULL field; embedded quotes are doubled.  Note that with ``minimal``
  an empty string and NULL both become an empty field (RFC 4180 has no NULL).

Speed is the other half of the contract: a batch is formatted with pyarrow.compute kernels
(casts, regex match, substring replace, element-wise join) so no Python code runs per row; the
one exception is binary columns, hex-encoded per value (rare in tabular exports).

Deliberately not here: files, temp names, encodings other than UTF-8 (see ``csv_writer``), and
any knowledge of where the data came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

_MICROS_PER_SECOND = 1_000_000

# Characters each formatted kind can contain.  A column whose alphabet cannot contain the
# delimiter never needs the (comparatively costly) quoting scan: with "," as delimiter only
# text and binary columns are scanned.
_DIGITS = "0123456789"
_ALPHABET_INT = _DIGITS + "-"
_ALPHABET_FLOAT = _DIGITS + "-+.einfa"
_ALPHABET_DECIMAL = _DIGITS + "-."
_ALPHABET_DATE = _DIGITS + "-"
_ALPHABET_TIMESTAMP = _DIGITS + "-:. +"
_ALPHABET_TIME = _DIGITS + "-:."
_ALPHABET_BYTEA = _DIGITS + "\\xabcdef"


@dataclass(frozen=True)
class CsvOptions:
    """The CSV dialect of a written file."""

    delimiter: str = ","
    header: bool = True
    encoding: str = "utf-8"
    newline: Literal["lf", "crlf"] = "lf"
    quoting: Literal["minimal", "all"] = "minimal"

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(f"delimiter must be one character other than '\"', CR, LF: {self.delimiter!r}")
        if self.newline not in ("lf", "crlf"):
            raise ValueError(f"newline must be 'lf' or 'crlf': {self.newline!r}")
        if self.quoting not in ("minimal", "all"):
            raise ValueError(f"quoting must be 'minimal' or 'all': {self.quoting!r}")

    @property
    def line_terminator(self) -> str:
        return "\r\n" if self.newline == "crlf" else "\n"


def format_header(names: Sequence[str], options: CsvOptions) -> str:
    """The header line (with its line terminator); names are quoted by the same rule as values."""
    return options.delimiter.join(_quote_text(name, options) for name in names) + options.line_terminator


def format_rows(batch: pa.RecordBatch, options: CsvOptions) -> pa.StringArray:
    """One string per row: the CSV line including its terminator, as UTF-8.

    The caller writes the array's value buffer as is (see ``rows_as_bytes``), so the whole batch
    reaches the file without a Python object per row.
    """
    if batch.num_columns == 0:
        raise ValueError("a CSV row needs at least one column")
    columns = [format_column(column, options) for column in batch.columns]
    # The terminator rides on the last column and the delimiter is the join's separator: the
    # join's cost grows with its argument count, so this is cheaper than passing them as scalars.
    columns[-1] = pc.binary_join_element_wise(
        columns[-1], options.line_terminator, "", null_handling="replace", null_replacement=""
    )
    return pc.binary_join_element_wise(*columns, options.delimiter, null_handling="replace", null_replacement="")


def rows_as_bytes(rows: pa.StringArray) -> memoryview:
    """The contiguous UTF-8 bytes of ``rows`` (a slice of its value buffer, no copy)."""
    if len(rows) == 0:
        return memoryview(b"")
    _validity, offsets_buffer, data = rows.buffers()
    offsets = memoryview(offsets_buffer).cast("i")  # int32 offsets of a (non-large) string array
    start, end = offsets[rows.offset], offsets[rows.offset + len(rows)]
    return memoryview(data)[start:end]


def format_column(array: pa.Array | pa.ChunkedArray, options: CsvOptions) -> pa.Array:
    """The CSV field text of every value (quoted as needed); NULL stays NULL (written as empty)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    text, alphabet = _to_text(array)
    if text.type != pa.string():
        # Row joining needs one string type; batches are sliced small enough for 32-bit offsets.
        text = text.cast(pa.string())
    if options.quoting == "all":
        quoted = pc.is_valid(text)
    elif alphabet is not None and options.delimiter not in alphabet:
        return text
    else:
        quoted = pc.match_substring_regex(text, _quote_regex(options.delimiter))
        if not pc.any(quoted).as_py():
            return text
    # The quote is '"' or "" per row, so quoting is one join rather than a join plus an if_else.
    # Doubling quotes touches only quoted fields: a '"' always forces quoting.  A NULL field
    # stays NULL (the join emits null when the text is null).
    quote = pc.if_else(quoted, '"', "")
    return pc.binary_join_element_wise(quote, pc.replace_substring(text, '"', '""'), quote, "")


def _to_text(array: pa.Array) -> tuple[pa.Array, str | None]:
    """Unquoted text of each value, and the characters it can contain (None: anything)."""
    t = array.type
    if pa.types.is_dictionary(t):
        return _to_text(array.cast(t.value_type))
    if pa.types.is_null(t):
        return pa.nulls(len(array), pa.string()), ""
    if pa.types.is_boolean(t):
        return array.cast(pa.int8()).cast(pa.string()), _DIGITS
    if pa.types.is_integer(t):
        return array.cast(pa.string()), _ALPHABET_INT
    if pa.types.is_floating(t):
        # Arrow uses the shortest round-trip representation (double-conversion); float32 values are
        # printed as float32, so a FLOAT 1.1 stays "1.1" rather than "1.100000023841858".
        return array.cast(pa.string()), _ALPHABET_FLOAT
    if pa.types.is_decimal(t):
        # Decimal -> string keeps exactly the type's scale: this is why extraction casts every
        # DECIMAL column to its source precision and scale.
        return array.cast(pa.string()), _ALPHABET_DECIMAL
    if pa.types.is_date(t):
        return array.cast(pa.date32()).cast(pa.string()), _ALPHABET_DATE
    if pa.types.is_timestamp(t):
        return _format_timestamp(array), _ALPHABET_TIMESTAMP
    if pa.types.is_time(t):
        return _format_time_of_day(array), _ALPHABET_TIME
    if pa.types.is_duration(t):
        return _format_duration(array), _ALPHABET_TIME
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return array, None
    if pa.types.is_string_view(t):
        return array.cast(pa.string()), None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _format_bytea(array), _ALPHABET_BYTEA
    if pa.types.is_binary_view(t):
        return _format_bytea(array.cast(pa.binary())), _ALPHABET_BYTEA
    raise TypeError(f"Arrow type {t} has no CSV representation in this product")


def _has_fraction(micros: pa.Array) -> pa.Array:
    # pyarrow has no integer modulo kernel; integer divide truncates, which is enough to test != 0.
    whole = pc.multiply(pc.divide(micros, _MICROS_PER_SECOND), _MICROS_PER_SECOND)
    return pc.not_equal(micros, whole)


def _seconds_or_micros(
    micros: pa.Array, full: Callable[[], pa.Array], seconds_only: Callable[[], pa.Array]
) -> pa.Array:
    """``full()`` text where the value has a fraction, else ``seconds_only()``.

    Built lazily: most columns have no fraction at all (DATETIME(0)), and then only the cheaper
    rendering runs.
    """
    fraction = _has_fraction(micros)
    if not pc.any(fraction).as_py():
        return seconds_only()
    return pc.if_else(fraction, full(), seconds_only())


def _format_timestamp(array: pa.Array) -> pa.Array:
    t: pa.TimestampType = array.type
    if t.unit == "ns":
        # Sub-microsecond digits are dropped: the product's timestamps stop at microseconds.
        array = pc.cast(array, pa.timestamp("us", tz=t.tz), safe=False)
    # Casting away the zone keeps the UTC instant; the "+00:00" suffix below says so.
    naive = array.cast(pa.timestamp("us"))
    text = _seconds_or_micros(
        naive.cast(pa.int64()),
        lambda: naive.cast(pa.string()),  # "YYYY-MM-DD HH:MM:SS.ffffff"
        lambda: pc.cast(naive, pa.timestamp("s"), safe=False).cast(pa.string()),
    )
    if t.tz is not None:
        text = pc.binary_join_element_wise(text, "+00:00", "")
    return text


def _format_time_of_day(array: pa.Array) -> pa.Array:
    if array.type.unit == "ns":
        array = pc.cast(array, pa.time64("us"), safe=False)
    micros = array.cast(pa.time64("us"))
    return _seconds_or_micros(
        micros.cast(pa.int64()),
        lambda: micros.cast(pa.string()),  # "HH:MM:SS.ffffff"
        lambda: pc.cast(micros, pa.time32("s"), safe=False).cast(pa.string()),
    )


def _format_duration(array: pa.Array) -> pa.Array:
    """``[-]HH:MM:SS[.ffffff]``, hours unbounded: MySQL's TIME type is a signed duration."""
    if array.type.unit == "ns":
        array = pc.cast(array, pa.duration("us"), safe=False)
    micros = array.cast(pa.duration("us")).cast(pa.int64())
    magnitude = pc.abs(micros)
    seconds = pc.divide(magnitude, _MICROS_PER_SECOND)
    fraction = pc.subtract(magnitude, pc.multiply(seconds, _MICROS_PER_SECOND))
    minutes_total = pc.divide(seconds, 60)
    hours = pc.divide(minutes_total, 60)
    minutes = pc.subtract(minutes_total, pc.multiply(hours, 60))
    secs = pc.subtract(seconds, pc.multiply(minutes_total, 60))

    def two_digits(values: pa.Array) -> pa.Array:
        return pc.utf8_lpad(values.cast(pa.string()), 2, "0")

    sign = pc.if_else(pc.less(micros, 0), "-", "")
    text = pc.binary_join_element_wise(sign, two_digits(hours), ":", two_digits(minutes), ":", two_digits(secs), "")
    has_fraction = pc.not_equal(fraction, 0)
    if pc.any(has_fraction).as_py():
        dot_fraction = pc.binary_join_element_wise(".", pc.utf8_lpad(fraction.cast(pa.string()), 6, "0"), "")
        text = pc.if_else(has_fraction, pc.binary_join_element_wise(text, dot_fraction, ""), text)
    return text


def _format_bytea(array: pa.Array) -> pa.Array:
    # No hex kernel in pyarrow: encode per value.  Binary columns are rare in tabular exports, and
    # bytes.hex() runs in C, so this stays far from the per-row cost of a Python CSV writer.
    return pa.array(
        [None if value is None else "\\x" + value.hex() for value in array.to_pylist()],
        type=pa.string(),
    )


def _quote_regex(delimiter: str) -> str:
    # RE2 syntax; \x{..} sidesteps escaping rules for whatever character the delimiter is.
    return f'[\\x{{{ord(delimiter):x}}}"\\r\\n]'


def _quote_text(value: str, options: CsvOptions) -> str:
    """The scalar version of the quoting rule, for the header."""
    if options.quoting == "all" or any(ch in value for ch in (options.delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value
