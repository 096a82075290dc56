"""Streaming Arrow record batches into a CSV file that appears atomically.

The file is written to a uniquely named temp file beside the target and moved over it with
``os.replace`` only once every batch is written, so a reader (or a retried run) never sees a
partial CSV, and a failure leaves neither the target nor the temp file behind.  Memory stays at
one batch (sliced to at most ``_MAX_SLICE_BYTES`` of Arrow data) whatever the table size.

UTF-8 output is written straight from the formatted Arrow buffer; any other encoding goes
through Python's incremental encoder per batch (slower, still no per-row Python), and a value
the encoding cannot represent is a ``CsvEncodingError`` naming the column.

Deliberately not here: the value rules (``formats.csv_values``), where batches come from, fsync
(durability against power loss is not promised; atomicity against failures is).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from osiris_dagster.arrow_memory import use_streaming_memory_pool
from osiris_dagster.formats.csv_values import CsvOptions, csv_lines, format_column, format_header
from osiris_dagster.runs.scratch import scratch_path

__all__ = ["CsvEncodingError", "CsvOptions", "CsvWriteResult", "replace_target", "write_csv"]

# Formatting works on slices of at most this much Arrow data: small enough that a few slices in
# flight (plus their text and the kernels' intermediates) stay a few tens of MB, far below the
# 2 GiB limit of a string array with 32-bit offsets; large enough that per-kernel call overhead
# does not show. 2 MiB rather than 4 (bench/extract_csv.py, 5M rows, write apart, 2026-12-06,
# load 4.5): peak RSS 155-158 MB instead of 185-186, the same CPU seconds (8.4-8.6).
_MAX_SLICE_BYTES = 2 * 1024 * 1024
_WRITE_BUFFER = 1024 * 1024
# Formatting is CPU-bound C++ (GIL released): one worker per core, at most 4.
_FORMAT_THREADS = min(4, os.cpu_count() or 1)


class CsvEncodingError(ValueError):
    """A value cannot be represented in the file's encoding."""


@dataclass(frozen=True)
class CsvWriteResult:
    path: Path
    rows: int
    bytes: int


def write_csv(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    target: Path,
    options: CsvOptions,
    *,
    progress: Callable[[int], None] | None = None,
    run_id: str | None = None,
    threads: int = _FORMAT_THREADS,
) -> CsvWriteResult:
    """Write ``batches`` (columns in ``schema`` order) as CSV at ``target``, atomically.

    ``threads``: how many batches are formatted at once (a CSV written while its table is still
    being extracted uses one: the extraction has the other core).

    ``progress(rows_so_far)`` is called after every written slice. The temp file's name carries
    ``run_id`` (``runs.scratch``): if the process is killed mid-write, the next run start
    recognises it as a dead run's debris and removes it.
    """
    use_streaming_memory_pool()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = scratch_path(target, run_id)
    rows = 0
    try:
        # "xb": a fresh file with the process umask's permissions, never someone else's file.
        with open(temp, "xb", buffering=_WRITE_BUFFER) as out:
            encode = _encoder(options.encoding)
            if options.header:
                out.write(encode(format_header(schema.names, options), None))
            for lines, piece in _formatted(_slices(batches, schema), options, threads):
                if encode is _utf8:
                    out.write(lines)
                else:
                    out.write(_encode_rows(lines, piece, schema, options, encode))
                rows += piece.num_rows
                if progress is not None:
                    progress(rows)
            if encode is not _utf8:
                out.write(encode("", True))  # let a stateful encoder flush what it holds
        replace_target(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return CsvWriteResult(path=target, rows=rows, bytes=target.stat().st_size)


def replace_target(source: Path, target: Path) -> None:
    """``os.replace(source, target)``, without waiting for the kernel to free the old target's pages.

    Renaming over a file frees its page cache inside the rename: 0.07 s for a 180 MB file and 0.35 s
    for 920 MB on the 2-core benchmark machine (the 1M / 5M-row benchmark CSVs), on the write
    step's path every time a run rewrites its CSV. Holding the old file open across the rename
    leaves that work to the last close, which a daemon thread does (``os.close`` releases the GIL)
    while the run goes on. If the process ends first, the kernel frees the pages at exit, as before.
    POSIX only: elsewhere an open target cannot be replaced.
    """
    old = _open_regular(target) if os.name == "posix" else None
    try:
        os.replace(source, target)
    finally:
        if old is not None:
            threading.Thread(target=os.close, args=(old,), name="csv-old-target", daemon=True).start()


def _open_regular(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO never blocks the open
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _slices(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if batch.num_columns != len(schema):
            raise ValueError(f"batch has {batch.num_columns} columns, the schema {len(schema)}: {schema.names}")
        if batch.num_rows == 0:
            continue
        size = batch.nbytes
        if size <= _MAX_SLICE_BYTES:
            yield batch
            continue
        step = max(1, batch.num_rows * _MAX_SLICE_BYTES // size)
        for start in range(0, batch.num_rows, step):
            yield batch.slice(start, step)


def _formatted(
    pieces: Iterator[pa.RecordBatch], options: CsvOptions, threads: int
) -> Iterator[tuple[bytes | memoryview, pa.RecordBatch]]:
    """``(csv_lines(piece), piece)`` in order, formatted ``threads`` pieces at a time.

    Formatting releases the GIL, so formatting batches on worker threads uses every core
    while the main thread reads the next batch and writes the previous one.  At most
    ``threads + 1`` pieces are in flight: memory stays bounded.
    """
    if threads < 2:
        for piece in pieces:
            yield csv_lines(piece, options), piece
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="csv-format")
    try:
        pending: deque[tuple[Future[bytes | memoryview], pa.RecordBatch]] = deque()
        for piece in pieces:
            pending.append((pool.submit(csv_lines, piece, options), piece))
            if len(pending) > threads:
                future, done = pending.popleft()
                yield future.result(), done
        while pending:
            future, done = pending.popleft()
            yield future.result(), done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _utf8(text: str, final: bool | None) -> bytes:
    return text.encode("utf-8")


_Encode = Callable[[str, bool | None], bytes]


def _encoder(encoding: str) -> _Encode:
    if codecs.lookup(encoding).name == "utf-8":
        return _utf8
    # Incremental: a BOM-writing codec (utf-8-sig, utf-16) emits its BOM once, not per batch.
    incremental = codecs.getincrementalencoder(encoding)(errors="strict")
    return lambda text, final: incremental.encode(text, bool(final))


def _encode_rows(
    lines: bytes | memoryview, piece: pa.RecordBatch, schema: pa.Schema, options: CsvOptions, encode: _Encode
) -> bytes:
    try:
        return encode(bytes(lines).decode("utf-8"), False)
    except UnicodeEncodeError:
        pass
    # Find the culprit column for an actionable message (only on the failure path).
    for name, column in zip(schema.names, piece.columns, strict=True):
        for value in format_column(column, options).to_pylist():
            if value is None:
                continue
            try:
                value.encode(options.encoding)
            except UnicodeEncodeError as exc:
                bad = value[exc.start : exc.end]
                raise CsvEncodingError(
                    f"column {name!r}: value {value[:40]!r} has {bad!r}, which {options.encoding} cannot encode"
                ) from None
    raise CsvEncodingError(f"the CSV text cannot be encoded as {options.encoding}")
