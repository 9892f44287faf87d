"""A cache of large result buffers, so repeated calls do not fault in fresh pages.

A large NumPy array is fresh memory from the operating system every time
(``malloc`` maps blocks past 32 MiB anew): the first write to each page
traps into the kernel, which zeroes the page before the kernel's own write.
For a backward pass that writes an input-sized gradient this costs more
than the pooling itself (measured: 5.6 ms of 7.6 ms for a 100 MB result at
2 threads).  So results of at least ``MIN_BYTES`` are views of cached slabs:
when every array made from a slab has been dropped, the next call of about
the same size reuses it, pages already mapped.

``CYPOOL_BUFFER_CACHE`` (MiB, read at import; default 1024) bounds the
memory the cache keeps; 0 turns it off.  A result made this way is an
ordinary array whose ``base`` is the slab (``owndata`` is False); nothing
else about it differs.
"""
from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np

MIN_BYTES = 4 << 20        # smaller arrays come from malloc's heap, already mapped
_ALIGN = 64                 # whole cache lines: streaming stores, AVX-512 loads


def _limit_from_env() -> int:
    raw = os.environ.get("CYPOOL_BUFFER_CACHE", "").strip()
    if not raw:
        return 1024 << 20
    try:
        mib = int(raw)
    except ValueError:
        raise ValueError(f"CYPOOL_BUFFER_CACHE must be a whole number of MiB (0 turns the "
                         f"cache off), got {raw!r}") from None
    if mib < 0:
        raise ValueError(f"CYPOOL_BUFFER_CACHE must be >= 0 MiB, got {mib}")
    return mib << 20


class BufferCache:
    """Slabs of raw memory handed out as array views while nobody else holds them."""

    def __init__(self, limit: int):
        self.limit = limit
        self._slabs: list[np.ndarray] = []
        self._lock = threading.Lock()

    @staticmethod
    def _free(slabs: list, i: int) -> bool:
        # the list's reference and getrefcount's argument: nobody else has it
        return sys.getrefcount(slabs[i]) == 2

    def held(self) -> int:
        """Bytes the cache holds (free and in use)."""
        return sum(s.nbytes for s in self._slabs)

    def clear(self) -> None:
        """Forget every slab (arrays still using one keep it alive)."""
        with self._lock:
            self._slabs.clear()

    def empty(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array, from a free slab when one fits
        (``dtype`` a np.dtype)."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_BYTES or nbytes + _ALIGN > self.limit:
            return np.empty(shape, dtype)
        with self._lock:
            slabs = self._slabs
            best = -1
            for i in range(len(slabs)):
                cap = slabs[i].nbytes - _ALIGN
                if nbytes <= cap <= nbytes + (nbytes >> 2) and self._free(slabs, i) and \
                        (best < 0 or cap < slabs[best].nbytes - _ALIGN):
                    best = i
            if best < 0:
                need = nbytes + _ALIGN
                held = sum(s.nbytes for s in slabs)
                i = 0
                while held + need > self.limit and i < len(slabs):
                    if self._free(slabs, i):
                        held -= slabs[i].nbytes
                        del slabs[i]
                    else:
                        i += 1
                if held + need > self.limit:
                    return np.empty(shape, dtype)
                slabs.append(np.empty(need, np.uint8))
                best = len(slabs) - 1
            slab = slabs[best]
        off = -slab.ctypes.data % _ALIGN
        return slab[off:off + nbytes].view(dtype).reshape(shape)


CACHE = BufferCache(_limit_from_env())
empty = CACHE.empty
