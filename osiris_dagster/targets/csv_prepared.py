"""Writing a run's CSV while its table is still being extracted, and handing it to the write step.

When one run materializes an extracted table *and* a CSV writer that needs it (the usual
``osiris-dagster run`` / "Materialize all"), the extract step gives every staged batch to a
``CsvPreparation`` too: a background thread formats and writes the CSV (``write_csv``: same
quoting, same bytes) into a scratch file of the run beside the target while connectorx is
still fetching. When the write step runs, ``adopt_prepared`` checks the receipt (same run, same
staged file: path, size, mtime, rows; same CSV options) and renames the prepared file onto the
target; anything else (no receipt, another run's file, a different staged file, options changed)
and the write step writes from the staged file as usual. So the written asset still appears only
in its own step, atomically, and a crash leaves only run-id-named debris.

Why: extraction (connectorx, network bound) and formatting (pyarrow kernels, CPU bound) run one
after the other otherwise; overlapped, extract + write costs about the longer of the two instead
of their sum (README "Performance" has the measurements).

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
from osiris_dagster.staging import ExtractedTable
from osiris_dagster.targets.csv_writer import CsvOptions, CsvWriteResult, write_csv

__all__ = ["CsvPlan", "CsvPreparation", "adopt_prepared"]

_QUEUE_BATCHES = 2  # batches waiting for the formatter: bounds memory (peak RSS), lets the fetch run ahead
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
    """Formats and writes one planned CSV on a background thread from batches handed to ``put``."""

    def __init__(self, plan: CsvPlan, schema: pa.Schema) -> None:
        self.plan = plan
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_BATCHES)
        self._result: CsvWriteResult | None = None
        self._failed = False
        self._ended = False
        self._thread = threading.Thread(target=self._write, args=(schema,), name="csv-prepare", daemon=True)
        self._thread.start()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while (item := self._queue.get()) is not _END:
            yield item  # type: ignore[misc]
        self._ended = True

    def _write(self, schema: pa.Schema) -> None:
        try:
            self._result = write_csv(
                self._batches(), schema, self.plan.prepared, self.plan.options, run_id=self.plan.run_id, threads=1
            )
        except BaseException:  # an optimization only: the write step will write (and report) it
            self._failed = True
            while not self._ended and self._queue.get() is not _END:  # keep the producer from blocking
                pass

    def put(self, batch: pa.RecordBatch) -> None:
        if not self._failed:
            self._queue.put(batch)

    def finish(self, table: ExtractedTable) -> None:
        """The extraction is complete and staged as ``table``: close the CSV, leave the receipt."""
        self._queue.put(_END)
        self._thread.join()
        if self._result is None or self._result.rows != table.rows:
            self.abandon()
            return
        receipt = self.plan.identity(table) | {"bytes": self._result.bytes}
        temp = scratch_path(self.plan.receipt, self.plan.run_id)
        temp.write_text(json.dumps(receipt))
        os.replace(temp, self.plan.receipt)

    def abandon(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()
        for path in (self.plan.prepared, self.plan.receipt):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def adopt_prepared(plan: CsvPlan, table: ExtractedTable) -> CsvWriteResult | None:
    """Move this run's prepared CSV onto the target if it was made from exactly ``table``, else None."""
    adopted: CsvWriteResult | None = None
    try:
        receipt = json.loads(plan.receipt.read_text())
        size = receipt.pop("bytes")
        if receipt == plan.identity(table) and plan.prepared.stat().st_size == size:
            os.replace(plan.prepared, plan.target)
            adopted = CsvWriteResult(path=plan.target, rows=table.rows, bytes=size)
    except (FileNotFoundError, ValueError, KeyError, AttributeError):
        pass
    finally:
        for leftover in (plan.receipt, *([] if adopted else [plan.prepared])):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return adopted
