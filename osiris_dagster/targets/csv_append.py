"""Appending the rows of an incremental step to its CSV file, atomically and idempotently.

Decision: **one growing file**, not one file per run. Consumers keep reading the path the
pipeline names (`output/items.csv`), with one header, and the file is exactly the source table's
rows in cursor order. Each append:

1. writes the new rows with the existing `write_csv` (no header) to a part file beside the target;
2. copies the *committed* prefix of the current file (its length as recorded by the last
   successful run) and then the part into a temp file;
3. renames the temp file over the target (``os.replace``).

A reader therefore never sees a half-appended file, and bytes appended by a run that later
failed are dropped by the next append, because only the committed prefix is copied: a failed
run neither loses nor duplicates rows. The cost is one copy of the file per run (sequential
I/O, no parsing); per-run files would avoid it at the price of every consumer globbing parts.

A file shorter than its committed length was changed outside osiris-dagster; appending to it
would leave a gap, so that is an error (wipe the asset's materializations to start over).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa

from osiris_dagster.runs.scratch import scratch_path
from osiris_dagster.targets.csv_writer import CsvOptions, CsvWriteResult, write_csv

_COPY_BUFFER = 1024 * 1024


class CsvAppendError(Exception):
    """The target file does not hold what the last successful run committed."""


def append_csv(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    target: Path,
    options: CsvOptions,
    *,
    committed_bytes: int | None,
    progress: Callable[[int], None] | None = None,
    run_id: str | None = None,
) -> CsvWriteResult:
    """Append ``batches`` after the first ``committed_bytes`` of ``target`` (a fresh file when None).

    The result's ``rows`` are the rows appended by this call; ``bytes`` the file's new size.
    """
    target = Path(target)
    if committed_bytes is None:
        return write_csv(batches, schema, target, options, progress=progress, run_id=run_id)
    size = target.stat().st_size if target.exists() else -1
    if size < committed_bytes:
        found = "missing" if size < 0 else f"{size} bytes"
        raise CsvAppendError(
            f"{target.name}: the last successful run left {committed_bytes} bytes, the file is {found}; "
            "it was changed outside osiris-dagster (wipe the asset's materializations to rebuild it)"
        )
    # Scratch names carry the run id, so a killed run's part and temp files are recognisable.
    part = scratch_path(target, run_id, "part")
    temp = scratch_path(target, run_id)
    try:
        written = write_csv(
            batches, schema, part, dataclasses.replace(options, header=False), progress=progress, run_id=run_id
        )
        with open(temp, "xb") as out:
            with open(target, "rb") as current:
                _copy_prefix(current, out, committed_bytes)
            with open(part, "rb") as new_rows:
                shutil.copyfileobj(new_rows, out, _COPY_BUFFER)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return CsvWriteResult(path=target, rows=written.rows, bytes=target.stat().st_size)


def _copy_prefix(source, out, length: int) -> None:  # type: ignore[no-untyped-def]
    remaining = length
    while remaining:
        chunk = source.read(min(_COPY_BUFFER, remaining))
        if not chunk:
            break
        out.write(chunk)
        remaining -= len(chunk)
