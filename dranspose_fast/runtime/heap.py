"""glibc malloc settings for the processes that move large frames.

libzmq allocates each received message with ``malloc``. By default glibc serves blocks of
128 KiB and more with a fresh ``mmap`` and gives freed memory at the top of a heap back to the
kernel, so with 1 MiB frames every frame costs 256 page faults, the zeroing of each page and
an ``munmap`` (``perf`` on a worker receiving 1 MiB frames: the faults cost about as much
as the copy out of the socket itself; see bench/README.md). Served from the heap, and the
heap kept, the next frame lands in pages that are already mapped.

The price: a process keeps up to ``keep_bytes`` of freed memory instead of returning it,
i.e. its peak, which the byte-sized high-water marks and the credit window already bound.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
from typing import Final

__all__ = ["MMAP_THRESHOLD", "keep_freed_memory", "settle_heap"]

log = logging.getLogger(__name__)

# mallopt() parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD: Final[int] = -1
_M_MMAP_THRESHOLD: Final[int] = -3
#: Blocks up to this size come from the heap; glibc refuses more (HEAP_MAX_SIZE / 2 on 64 bit).
MMAP_THRESHOLD: Final[int] = 32 << 20

_lock = threading.Lock()
_applied: int | None = None


def keep_freed_memory(keep_bytes: int) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to ``keep_bytes`` of it when freed.

    Process-wide and idempotent; ``keep_bytes <= 0`` leaves glibc's defaults. Returns whether
    the settings are in force (``False`` on a C library without ``mallopt``, e.g. musl).
    """
    global _applied
    if keep_bytes <= 0:
        return False
    with _lock:
        if _applied is not None and _applied >= keep_bytes:
            return True
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            log.info("no glibc mallopt(): large frames are allocated with the C library's defaults")
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        keep = min(keep_bytes, (1 << 31) - 1)  # an int parameter
        if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, keep)):
            log.warning("mallopt() refused the heap settings for large frames")
            return False
        _applied = keep
        return True


def settle_heap() -> None:
    """Collect garbage, then exempt every surviving object from later collections.

    Called once when a service starts: the full collections of its large heap (imports,
    the user's class) would otherwise stall the data path every so often.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
