"""CSV quoting of staged text: how one staged column becomes CSV fields.

Staged columns already hold each cell as the source database printed it (``sources``,
``formats.mysql_text`` / ``postgres_text`` / ``python_text``), so writing CSV is quoting only:

* NULL -> empty field; any other value is its text, unchanged;
* RFC 4180 quoting: ``minimal`` quotes only a field containing the delimiter, ``"``, CR or LF;
  ``all`` quotes every non-NULL field (so an empty string is ``""`` and NULL stays empty);
  embedded quotes are doubled. With ``minimal`` an empty string and NULL are both an empty field
  (RFC 4180 has no NULL).

Speed: ``csv_lines`` formats a batch in C (``formats._csv_rows``: two passes over the bytes, GIL
released; ~4x less CPU than the kernels below on the benchmark table). ``format_rows`` is the same
rules in pyarrow.compute kernels (regex match, substring replace, element-wise join): the
reference the C version is tested against, and the path for a delimiter outside ASCII or a
source tree whose C parts were never built. Either way no Python code runs per row, and a column
of a type whose text cannot contain the delimiter (numbers, dates, times on MySQL and
PostgreSQL: ``column_alphabets``, from each dialect's text rules) is not even scanned.

Deliberately not here: files, temp names, encodings other than UTF-8 (see ``targets.csv_writer``),
value formatting of any kind (there is none to do), and where the data came from.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa


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
    import pyarrow.compute as pc  # here: the C path never needs it (~40 ms of imports)

    if batch.num_columns == 0:
        raise ValueError("a CSV row needs at least one column")
    alphabets = column_alphabets(batch.schema)
    columns = [format_column(c, options, alphabet) for c, alphabet in zip(batch.columns, alphabets, strict=True)]
    # The terminator rides on the last column and the delimiter is the join's separator: the
    # join's cost grows with its argument count, so this is cheaper than passing them as scalars.
    columns[-1] = pc.binary_join_element_wise(
        columns[-1], options.line_terminator, "", null_handling="replace", null_replacement=""
    )
    return pc.binary_join_element_wise(*columns, options.delimiter, null_handling="replace", null_replacement="")


def csv_lines(batch: pa.RecordBatch, options: CsvOptions) -> bytes | memoryview:
    """The CSV lines of ``batch``, terminators included, as UTF-8: ``format_rows``'s bytes."""
    native = _native_formatter()
    if native is None or not options.delimiter.isascii() or batch.num_columns == 0:
        return rows_as_bytes(format_rows(batch, options))
    columns = []
    for array, alphabet in zip(batch.columns, column_alphabets(batch.schema), strict=True):
        text = _as_text(array)
        validity, offsets, values = text.buffers()
        scan = alphabet is None or options.delimiter in alphabet
        columns.append((validity, offsets, b"" if values is None else values, text.offset, scan))
    return native.format_rows(
        columns, batch.num_rows, ord(options.delimiter), options.line_terminator.encode(), options.quoting == "all"
    )


@functools.cache
def _native_formatter() -> Any:
    try:
        from osiris_dagster.formats import _csv_rows
    except ImportError:  # a source tree never built: the kernels give the same bytes, slower
        return None
    return _csv_rows


def rows_as_bytes(rows: pa.StringArray) -> memoryview:
    """The contiguous UTF-8 bytes of ``rows`` (a slice of its value buffer, no copy)."""
    if len(rows) == 0:
        return memoryview(b"")
    _validity, offsets_buffer, data = rows.buffers()
    offsets = memoryview(offsets_buffer).cast("i")  # int32 offsets of a (non-large) string array
    start, end = offsets[rows.offset], offsets[rows.offset + len(rows)]
    return memoryview(data)[start:end]


def column_alphabets(schema: pa.Schema) -> list[str | None]:
    """Per column, every character its cells can contain (None: anything), from its source SQL type.

    Only servers that enforce column types give one (MySQL/MariaDB, PostgreSQL); a SQLite column can
    hold any value whatever its declared type.
    """
    from osiris_dagster.staging import source_dialect, sql_type

    dialect = source_dialect(schema)
    if dialect in ("mysql", "mariadb"):
        from osiris_dagster.formats.mysql_text import text_alphabet
    elif dialect == "postgresql":
        from osiris_dagster.formats.postgres_text import text_alphabet
    else:
        return [None] * len(schema)
    return [text_alphabet(sql_type(field)) if sql_type(field) else None for field in schema]


def format_column(array: pa.Array | pa.ChunkedArray, options: CsvOptions, alphabet: str | None = None) -> pa.Array:
    """The CSV field text of every value (quoted as needed); NULL stays NULL (written as empty).

    ``alphabet``: every character the column's cells can contain, when known; a column that cannot
    contain the delimiter (nor a quote, CR or LF, which no alphabet has) skips the quoting scan.
    """
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    text = _as_text(array)
    if options.quoting == "all":
        return _quoted(text)
    if alphabet is not None and options.delimiter not in alphabet:
        return text
    needs = pc.fill_null(pc.match_substring_regex(text, _quote_regex(options.delimiter)), False)
    count = pc.sum(needs).as_py() or 0
    if count == 0:
        return text
    if count == len(text) - text.null_count:
        return _quoted(text)
    # Only the fields that need quotes are rewritten (a '"' always forces quoting, so doubling
    # quotes touches only them) and put back in place: on the benchmark's title column (a quarter
    # of the values quoted) 0.51 s instead of 1.12 s for rewriting every field, per 1M rows.
    return pc.replace_with_mask(text, needs, _quoted(pc.filter(text, needs)))


def _quoted(text: pa.Array) -> pa.Array:
    """Every non-NULL value in quotes with its quotes doubled; NULL stays NULL."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")


def _as_text(array: pa.Array) -> pa.Array:
    t = array.type
    if pa.types.is_string(t):
        return array
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        # Row joining needs one string type; batches are sliced small enough for 32-bit offsets.
        return array.cast(pa.string())
    if pa.types.is_null(t):
        return pa.nulls(len(array), pa.string())
    raise TypeError(f"staged columns are text; a {t} column was not produced by osiris_dagster.sources")


def _quote_regex(delimiter: str) -> str:
    # RE2 syntax; \x{..} sidesteps escaping rules for whatever character the delimiter is.
    return f'[\\x{{{ord(delimiter):x}}}"\\r\\n]'


def _quote_text(value: str, options: CsvOptions) -> str:
    """The scalar version of the quoting rule, for the header."""
    if options.quoting == "all" or any(ch in value for ch in (options.delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value
