"""Giving freed host memory back to the system between the blocks of a block-sequential run.

A block-sequential pass frees each decoder block's tensors (4-50 MB each) before the next one is
read. glibc's malloc serves allocations above its mmap threshold with mmap, but the threshold rises
to the largest block freed (up to 32 MB) after the first large free, so the following blocks come
from the heap; freed heap chunks stay mapped, the heap fragments, and peak RSS grows with depth
(measured: +57 MB per block of a hidden-1024 Llama, benchmarks/scale.py) though nothing is kept.
`malloc_trim(0)` after each block hands every whole free page of every arena back (madvise), so
the peak is one block's working set again. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system; True where that was possible (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
