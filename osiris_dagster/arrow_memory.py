"""Memory for the data path: freed batch buffers are reused, and what is kept stays a few batches.

A table streams through one batch at a time, so what the process holds should stay at a few
batches. Two allocators hold those buffers:

* **Arrow's pool.** pyarrow's default (mimalloc in the Linux wheels) keeps freed pages for reuse
  and peak RSS drifts to ~240 MB on the 1M-row benchmark. jemalloc returns freed pages to the
  system after ``_JEMALLOC_DECAY_MS``: pages freed by one batch are reused by the next.
* **glibc's malloc**, which the C row reader and CSV formatter use for batch buffers. glibc raises its
  mmap threshold each time a large block is freed (up to 32 MB), after which freed blocks of any
  size stay in the heap. The thresholds are fixed at ``_BATCH_BLOCK_BYTES`` (8 MiB): a batch's
  column buffers (a few MB) come from the heap and are reused, while the heap gives back
  anything above 8 MiB free at its top.

Both are trade-offs between memory handed back and CPU spent re-faulting it. Measured on the 1M /
5M-row benchmark (bench/extract_csv.py, "one run", 2 cores, 2026-12-06, load 5): returning every
freed page at once (decay 0, thresholds at 128 KiB) took 225k / 1,080k page faults and 0.9 / 6.5
system CPU-s for a peak RSS of 152 / 153 MB; decay 1 s and 8 MiB thresholds take 28k / 52k faults
and 0.35 / 2.2 system CPU-s for 177 / 187 MB. The faults are most of the difference: every fresh
page is zeroed by the kernel (and on a VM with free-page reporting, faulted in by the host too).

Both are process-wide; the drivers select them when they start streaming, which is deliberate: the
process running a step is the product's own. Set OSIRIS_ARROW_POOL=default to keep pyarrow's and
glibc's choices.
"""

from __future__ import annotations

import ctypes
import os
import threading

import pyarrow as pa

_lock = threading.Lock()
_selected = False

# mallopt(3) parameters (malloc.h); setting either one turns glibc's dynamic adjustment off.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_BATCH_BLOCK_BYTES = 8 * 1024 * 1024
# How long jemalloc keeps freed pages before returning them (the next batches reuse them).
_JEMALLOC_DECAY_MS = 1000


def use_streaming_memory_pool() -> None:
    global _selected
    with _lock:
        if _selected or os.environ.get("OSIRIS_ARROW_POOL") == "default":
            return
        _selected = True
        _fix_malloc_thresholds()
        try:
            pool = pa.jemalloc_memory_pool()
        except NotImplementedError:  # a pyarrow build without jemalloc: keep its default
            return
        pa.set_memory_pool(pool)
        pa.jemalloc_set_decay_ms(_JEMALLOC_DECAY_MS)


def _fix_malloc_thresholds() -> None:
    """Fix glibc's mmap and trim thresholds (module doc); nothing on a libc without ``mallopt``."""
    try:
        # The process's own symbols: libc is loaded already (``find_library`` would run ldconfig).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return
    mallopt(_M_MMAP_THRESHOLD, _BATCH_BLOCK_BYTES)
    mallopt(_M_TRIM_THRESHOLD, _BATCH_BLOCK_BYTES)
