"""Dropping mapped caffemodel pages once their weights have been copied elsewhere.

Blob arrays are views on a read-only file mapping; every page touched stays in this
process's RSS until unmapped. Converting a 553 MB model would otherwise hold the whole
file *and* the Keras variables. MADV_DONTNEED on a read-only shared mapping only drops
our mapping of the page (the page cache keeps it; a later read faults it back in), so
it is always safe.
"""
from __future__ import annotations

import mmap

import numpy as np

_PAGE = mmap.PAGESIZE


def _mapping_of(arr):
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def release(arrays):
    """Drop the mapped pages that lie wholly inside each array's bytes."""
    for arr in arrays:
        if not isinstance(arr, np.ndarray) or arr.nbytes < 4 * _PAGE:
            continue
        mm = _mapping_of(arr)
        if mm is None or getattr(mm, "closed", False):
            continue
        try:
            start0 = np.frombuffer(mm, np.uint8, count=1).ctypes.data
        except (ValueError, TypeError):
            continue
        lo = arr.ctypes.data - start0
        hi = lo + arr.nbytes
        lo = -(-lo // _PAGE) * _PAGE
        hi = hi // _PAGE * _PAGE
        if hi > lo:
            try:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (AttributeError, OSError, ValueError):
                return  # platform without madvise: nothing to gain, nothing lost
