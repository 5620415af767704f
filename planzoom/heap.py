"""The C heap of the processes that move pixels (the tile service, render
worker processes): freed blocks are kept for the next page.

glibc serves a large allocation (a raster block, a render band: megabytes)
with a fresh ``mmap`` and unmaps it when freed, so every page's blocks
fault in and are zeroed by the kernel again: on a 117-page set that was a
fifth of the tile worker's time. With these settings blocks up to
``MMAP_THRESHOLD_BYTES`` come from the heap and freed ones are reused; the
heap is trimmed only once ``TRIM_THRESHOLD_BYTES`` lie free at its top, so
a worker's RSS stays near its peak (bounded by its blocks in flight).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 128 << 20
TRIM_THRESHOLD_BYTES = 256 << 20


def keep_freed_blocks() -> bool:
    """Apply the settings above to this process's glibc heap; returns False
    (and changes nothing) where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("no glibc mallopt here: heap left as it is")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
