"""Memory for scan-sized arrays reused within the process instead of mapped afresh.

glibc hands every allocation above its threshold (at most 32 MB; a float64 volume of the 1 mm
template grid is 58 MB) straight to and from the kernel, so each of the many volume-sized
temporaries of a `segment` comes back zero-filled and page-faulted anew, and numpy advises the
kernel to back each one with transparent huge pages, which where the kernel's `defrag` policy
is "madvise" (Ubuntu's default) stalls the first touch for memory compaction (29 MB: 70-95 ms
instead of 25 ms here). For the commands that score scans in one process and exit, big
allocations stay on the heap, freed memory stays in the process for the next array, and
numpy's advice is off: system time 2.0-2.5 -> 0.9 s a `segment`, the same peak memory
(docs/speed.md)."""

from __future__ import annotations

import ctypes

import numpy as np

#: glibc's `mallopt` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def reuse_memory() -> bool:
    """Keep freed memory for reuse (glibc's `mallopt`) and numpy's huge-page advice off; False
    where the C library has no `mallopt` (not glibc), which changes nothing there."""
    core = getattr(np, "_core", None) or np.core
    advise = getattr(core.multiarray, "_set_madvise_hugepage", None)
    if advise is not None:
        advise(False)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
