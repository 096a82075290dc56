"""Memory for the data path: freed batch buffers go straight back to the operating system.

A table streams through one batch at a time, so what the process holds should stay at a few
batches. Two allocators hold those buffers:

* **Arrow's pool.** pyarrow's default (mimalloc in the Linux wheels) keeps freed pages for reuse
  and peak RSS drifts to ~240 MB on the 1M-row benchmark; jemalloc with a decay of 0 returns them
  at once and peaks at ~200 MB at the same speed (bench/extract_csv.py, measured in one run).
* **glibc's malloc**, which connectorx (Rust) uses for the batches it reads ahead. glibc raises its
  mmap threshold each time a large block is freed (up to 32 MB), after which batch-sized blocks come
  from the heap and stay in the process when freed. Fixing the threshold at 128 KiB (glibc's
  default start value) keeps batch buffers mmapped, so freeing one unmaps it: 8-10 MB less peak
  RSS on the 1M-row benchmark (197-198 MB against 202-207 MB, three pairs, same CPU seconds).

Both are process-wide; the drivers select them when they start streaming, which is deliberate: the
process running a step is the product's own. Set OSIRIS_ARROW_POOL=default to keep pyarrow's and
glibc's choices.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

import pyarrow as pa

_lock = threading.Lock()
_selected = False

# mallopt(3) parameters (malloc.h); setting either one turns glibc's dynamic adjustment off.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_BATCH_BLOCK_BYTES = 128 * 1024


def use_streaming_memory_pool() -> None:
    global _selected
    with _lock:
        if _selected or os.environ.get("OSIRIS_ARROW_POOL") == "default":
            return
        _selected = True
        _return_freed_native_blocks()
        try:
            pool = pa.jemalloc_memory_pool()
        except NotImplementedError:  # a pyarrow build without jemalloc: keep its default
            return
        pa.set_memory_pool(pool)
        pa.jemalloc_set_decay_ms(0)


def _return_freed_native_blocks() -> None:
    """Fix glibc's mmap and trim thresholds (module doc); nothing on a libc without ``mallopt``."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return
    mallopt(_M_MMAP_THRESHOLD, _BATCH_BLOCK_BYTES)
    mallopt(_M_TRIM_THRESHOLD, _BATCH_BLOCK_BYTES)
