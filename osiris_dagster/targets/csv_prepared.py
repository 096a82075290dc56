"""Writing a run's CSV while its table is still being extracted, and handing it to the write step.

When one run materializes an extracted table *and* a CSV writer that needs it (the usual
``osiris-dagster run`` / "Materialize all"), the extract step tells a ``CsvPreparation`` where
each batch lies in the staged file as soon as it is written: a background thread reads the batch
back and formats and writes the CSV (``write_csv``: same quoting, same bytes) into a scratch file
of the run beside the target while the table is still being fetched. When the write step runs,
``adopt_prepared`` checks the receipt (same run, same staged file: path, size, mtime, rows; same
CSV options) and renames the prepared file onto the target; anything else (no receipt, another
run's file, a different staged file, options changed) and the write step writes from the staged
file as usual. So the written asset still appears only in its own step, atomically, and a crash
leaves only run-id-named debris.

Why: extraction (bound by the server) and formatting (CPU bound) run one
after the other otherwise; overlapped, extract + write costs about the longer of the two instead
of their sum (README "Performance" has the measurements). Reading batches back from the staged
file (the page cache: ~0.05 s per 1M benchmark rows) instead of taking them from the extraction
keeps memory flat whichever side is faster: batches handed over in memory either queue up in the
process or, with a bounded queue, hold up the extraction (with connectorx, which read ahead
without bound, they piled up inside it: peak RSS grew past 200 MB that way on an idle machine).

Preparation is an optimization only: if it fails (e.g. a value the file's encoding cannot hold)
it is dropped silently and the write step then writes, and fails, the ordinary way. Incremental
appends are never prepared (the writer filters rows by its own committed cursor).

Deliberately not here: deciding which writers to prepare (the pipeline component knows the run's
selection), CSV formatting (``formats.csv_values`` via ``csv_writer``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from osiris_dagster.runs.scratch import scratch_path
from osiris_dagster.staging import ExtractedTable, StagedBatch, StagedBatchReader
from osiris_dagster.targets.csv_writer import CsvOptions, CsvWriteResult, replace_target, write_csv

__all__ = ["CsvPlan", "CsvPreparation", "adopt_prepared"]

# The preparing thread's niceness (Linux: per thread). On 2 cores the server producing the rows,
# the fetch and this thread compete; the extraction is the run's critical path and this thread can
# trail it by a batch or two. Measured (1M benchmark rows, one run, idle, 6 alternated pairs,
# 2026-12-06 23:44): extraction done at 1.20 s median with niceness 10 against 1.25 s at 0, and
# the CSV in place at the same moment (its last batch formats in ~3 ms).
_PREPARING_NICENESS = 10  # added to the thread's niceness, at most 19
# One formatting thread: the extraction has the other core. Two finished sooner on a loaded
# machine but held ~30 MB more (peak RSS 192-201 MB against 166 MB at 1M benchmark rows).
_FORMAT_THREADS = 1
_END = object()
# Fixed tags in the run's scratch-file names (runs.scratch): the write step finds the files, and
# the debris of a run that died is recognised and removed like any other scratch file.
_PREPARED_TAG, _RECEIPT_TAG = "c5b0e7a1d2f30001", "c5b0e7a1d2f30002"


@dataclass(frozen=True)
class CsvPlan:
    """A CSV file a write step of this run will write from an extracted table."""

    target: Path
    options: CsvOptions
    run_id: str

    @property
    def prepared(self) -> Path:
        return self.target.with_name(f".{self.target.name}.osiris-{self.run_id}.{_PREPARED_TAG}.part")

    @property
    def receipt(self) -> Path:
        return self.target.with_name(f".{self.target.name}.osiris-{self.run_id}.{_RECEIPT_TAG}.part")

    def identity(self, table: ExtractedTable) -> dict[str, object]:
        stat = table.path.stat()
        return {
            "run_id": self.run_id,
            "staged": str(table.path.resolve()),
            "staged_bytes": stat.st_size,
            "staged_mtime_ns": stat.st_mtime_ns,
            "rows": table.rows,
            "options": dataclasses.asdict(self.options),
        }


class CsvPreparation:
    """Formats and writes one planned CSV on a background thread, reading the batches ``put`` names."""

    def __init__(self, plan: CsvPlan, schema: pa.Schema) -> None:
        self.plan = plan
        self.schema = schema
        # Unbounded, and cheap: it holds where batches lie in the staged file, not batches.
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._reader: StagedBatchReader | None = None
        self._result: CsvWriteResult | None = None
        self._thread = threading.Thread(target=self._write, name="csv-prepare", daemon=True)
        self._thread.start()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while (item := self._queue.get()) is not _END:
            assert self._reader is not None and isinstance(item, StagedBatch)
            yield self._reader.read(item)

    def _write(self) -> None:
        _yield_to_the_extraction()
        try:
            self._result = write_csv(
                self._batches(), self.schema, self.plan.prepared, self.plan.options, run_id=self.plan.run_id,
                threads=_FORMAT_THREADS,
            )  # fmt: skip
        except BaseException:  # an optimization only: the write step will write (and report) it
            return

    def put(self, where: StagedBatch) -> None:
        if self._reader is None:  # opened while the staged file is still being written
            self._reader = StagedBatchReader(where.path, self.schema)
        if self._thread.is_alive():
            self._queue.put(where)

    def _stop(self) -> None:
        self._queue.put(_END)
        self._thread.join()
        if self._reader is not None:
            self._reader.close()

    def finish(self, table: ExtractedTable) -> None:
        """The extraction is complete and staged as ``table``: close the CSV, leave the receipt."""
        self._stop()
        if self._result is None or self._result.rows != table.rows:
            self.abandon()
            return
        receipt = self.plan.identity(table) | {"bytes": self._result.bytes}
        temp = scratch_path(self.plan.receipt, self.plan.run_id)
        temp.write_text(json.dumps(receipt))
        os.replace(temp, self.plan.receipt)

    def abandon(self) -> None:
        if self._thread.is_alive():
            self._stop()
        for path in (self.plan.prepared, self.plan.receipt):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _yield_to_the_extraction() -> None:
    """Lower this thread's priority (not the process's) where the platform can; else nothing."""
    with contextlib.suppress(AttributeError, OSError):  # no setpriority, or not allowed: as it is
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread)  # relative: a niced run stays niced more
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness + _PREPARING_NICENESS, 19))


def adopt_prepared(plan: CsvPlan, table: ExtractedTable) -> CsvWriteResult | None:
    """Move this run's prepared CSV onto the target if it was made from exactly ``table``, else None."""
    adopted: CsvWriteResult | None = None
    try:
        receipt = json.loads(plan.receipt.read_text())
        size = receipt.pop("bytes")
        if receipt == plan.identity(table) and plan.prepared.stat().st_size == size:
            replace_target(plan.prepared, plan.target)
            adopted = CsvWriteResult(path=plan.target, rows=table.rows, bytes=size)
    except (FileNotFoundError, ValueError, KeyError, AttributeError):
        pass
    finally:
        for leftover in (plan.receipt, *([] if adopted else [plan.prepared])):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return adopted
