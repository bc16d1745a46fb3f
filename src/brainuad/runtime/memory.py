"""Memory for scan-sized arrays reused within the process instead of mapped afresh.

glibc hands every allocation above its threshold (at most 32 MiB; one float32 volume of the
1 mm template grid, 197 x 233 x 189, is 35 MB) straight to and from the kernel, so each of the
many volume-sized temporaries of a `segment` comes back zero-filled and page-faulted anew; and
numpy advises the kernel to back each one with transparent huge pages, which where the kernel's
`defrag` policy is "madvise" (Ubuntu's default) stalls the first touch in memory compaction
(numpy#31590; a fresh 29 MB array 70-95 ms instead of 25 ms here). `segment`, `compare` and
`bids` (the commands, not the library functions) keep big allocations on the heap and freed
memory in the process for the next array, and turn numpy's advice off: system time 1.7-2.6 ->
0.8-1.0 s a `segment`, wall time 0.81-0.97 of before at about the same peak; one process
segmenting 16 scans 125 -> 95 s, its peak 1.46 -> 1.53 GB (docs/speed.md); a `compare`
19.0-19.4 -> 16.9-18.6 s, its peak 1.30 -> 1.43 GB (docs/results/compare.md). The cost: freed
memory stays in the process until it ends (unless more than 2 GiB lies free at the top of its
heap). A user's own settings win: with `NUMPY_MADVISE_HUGEPAGE` set numpy's advice is left as
it is, with `MALLOC_MMAP_MAX_`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or a
`glibc.malloc` entry of `GLIBC_TUNABLES` set glibc's. Off glibc only numpy's advice is turned
off."""

from __future__ import annotations

import ctypes
import importlib
import os
import platform
import sys

#: glibc's `mallopt` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
#: the environment settings of glibc's allocator that a user may have chosen
_GLIBC_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def reuse_memory() -> bool:
    """For a scan command's process: numpy's huge-page advice off and glibc's allocator told
    to keep and reuse freed memory (`mallopt`). True where glibc took the settings; False
    elsewhere (macOS, Windows, musl) or where the user set them, which leaves glibc as it is."""
    if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
        _numpy_advice_off()
    if (not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
            or any(name in os.environ for name in _GLIBC_SETTINGS)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError, TypeError):  # no such function in this C library
        return False


def _numpy_advice_off() -> None:
    """numpy's own switch (what `NUMPY_MADVISE_HUGEPAGE=0` sets at its import; private, so
    looked up where numpy 2 and numpy 1 keep it, and skipped where neither has it)."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            setter = importlib.import_module(module)._set_madvise_hugepage
        except (ImportError, AttributeError):
            continue
        setter(False)
        return
