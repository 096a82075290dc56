"""Arrow's memory pool for the data path: jemalloc that hands freed pages straight back.

A table streams through one batch at a time, so what the process holds should stay at a few
batches. pyarrow's default pool (mimalloc in the Linux wheels) keeps freed pages for reuse and
peak RSS drifts to ~240 MB on the 1M-row benchmark; jemalloc with a decay of 0 returns them at
once and peaks at ~200 MB at the same speed (bench/extract_csv.py, measured in one run).

The pool is process-wide in Arrow; the drivers select it when they start streaming, which is
deliberate: the process running a step is the product's own. Set OSIRIS_ARROW_POOL=default to
keep pyarrow's choice.
"""

from __future__ import annotations

import os
import threading

import pyarrow as pa

_lock = threading.Lock()
_selected = False


def use_streaming_memory_pool() -> None:
    global _selected
    with _lock:
        if _selected or os.environ.get("OSIRIS_ARROW_POOL") == "default":
            return
        _selected = True
        try:
            pool = pa.jemalloc_memory_pool()
        except NotImplementedError:  # a pyarrow build without jemalloc: keep its default
            return
        pa.set_memory_pool(pool)
        pa.jemalloc_set_decay_ms(0)
