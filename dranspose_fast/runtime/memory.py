"""Give the memory of replaced parameters back to the kernel.

``heap.keep_freed_memory`` makes glibc serve blocks below 32 MiB from its heap and keep up to
``DFAST_HEAP_KEEP_BYTES`` (1 GiB) of what is freed there, so the next frames land in mapped
pages. A parameter value below 32 MiB (one of several masks or flat fields, say) is such a
block: read from Redis by the updates thread, it stays resident after the controller replaces
it, for the life of the process (measured on a worker: ten 20 MiB values replaced by small
ones left 221 MiB resident). A value of 32 MiB or more is ``mmap``-ed and goes back on
``free`` anyway.

So when a worker or the reducer replaces parameters whose dropped values add up to
``TRIM_FROM_BYTES`` or more, it calls glibc's ``malloc_trim(0)`` once they are gone: that
advises the kernel to drop every whole free page in every arena and shrinks the top of the
main arena (1 MiB left of the 221 above). The free top of a thread's arena is left alone
(glibc trims that only on ``free``, above ``M_TRIM_THRESHOLD``), so up to one heap of it
(64 MiB) stays with the arena of the thread that read the values: with glibc's per-thread
arenas, 61 MiB of the 221 above. The price is one pass over the kept heap (~15 ms per
256 MiB kept, measured) and page faults for the next frames that land in the returned pages:
paid once per large replacement, usually between scans.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar

from dranspose_fast.protocol import WorkParameter

__all__ = [
    "TRIM_FROM_BYTES", "parameters_nbytes", "replace_parameters", "return_freed_memory",
    "trim_after",
]

log = logging.getLogger(__name__)

#: Dropped parameter values of this many bytes or more are worth a ``malloc_trim``. Read at
#: call time, so a test can raise it to see what stays without the trim.
TRIM_FROM_BYTES = 16 << 20

K = TypeVar("K")
V = TypeVar("V")

_lock = threading.Lock()
_trim: Callable[[int], int] | None = None
_looked_up = False


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    global _trim, _looked_up
    with _lock:
        if not _looked_up:
            _looked_up = True
            try:
                fn = ctypes.CDLL(None).malloc_trim
            except (OSError, AttributeError):
                log.info("no glibc malloc_trim(): freed memory stays with the C library")
            else:
                fn.argtypes = [ctypes.c_size_t]
                fn.restype = ctypes.c_int
                _trim = fn
        return _trim


def _resident_mib() -> float | None:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def return_freed_memory(reason: str) -> bool:
    """Hand the C library's free pages back to the kernel (glibc ``malloc_trim(0)``).

    Call it once the last references to large objects are gone. ``reason`` goes into the
    log line. Returns False, doing nothing, on a C library without ``malloc_trim``.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    before = _resident_mib()
    start = time.perf_counter()
    trim(0)
    took = (time.perf_counter() - start) * 1e3
    after = _resident_mib()
    if before is not None and after is not None:
        log.info("returned freed memory after %s: resident %.0f -> %.0f MiB (%.0f ms)",
                 reason, before, after, took)
    else:
        log.info("returned freed memory after %s (%.0f ms)", reason, took)
    return True


def _nbytes(obj: Any) -> int:
    """The size of a bytes-like, text or array value; 0 for anything else (not walked)."""
    if isinstance(obj, bytes | bytearray):
        return len(obj)
    if isinstance(obj, str):
        return sys.getsizeof(obj)
    if isinstance(obj, memoryview):
        return obj.nbytes
    n = getattr(obj, "nbytes", None)  # numpy arrays and their kin
    return n if isinstance(n, int) else 0


def _parts(values: Any) -> dict[int, Any]:
    """The objects that hold the memory of a mapping's values, by identity (each once)."""
    found: dict[int, Any] = {}
    for value in values:
        # A WorkParameter holds the raw bytes from Redis and the value parsed from them
        # (the same object for a binary parameter).
        parts = (value.data, value.value) if isinstance(value, WorkParameter) else (value,)
        for part in parts:
            found[id(part)] = part
    return found


def parameters_nbytes(parameters: Mapping[Any, Any], keep: Mapping[Any, Any] | None = None) -> int:
    """Estimate the bytes held by the values of ``parameters``, not counting objects that
    ``keep``'s values hold too (they survive a replacement of ``parameters`` by ``keep``).

    Counts bytes and bytearrays, text, memoryviews and arrays (``nbytes``), directly or as a
    ``WorkParameter``'s ``data`` and ``value``; containers are not walked.
    """
    held = _parts(parameters.values())
    if keep is not None:
        for key in _parts(keep.values()):
            held.pop(key, None)
    return sum(_nbytes(part) for part in held.values())


def replace_parameters(held: MutableMapping[K, V], new: Mapping[K, V]) -> int:
    """Replace the contents of ``held`` (the mapping user code sees) by ``new``, in place.

    Returns the estimated bytes of the values that were dropped, for ``trim_after``.
    """
    dropped = parameters_nbytes(held, keep=new)
    held.clear()
    held.update(new)
    return dropped


def trim_after(dropped: int, reason: str) -> bool:
    """``return_freed_memory(reason)`` if ``dropped`` bytes reach ``TRIM_FROM_BYTES``.

    Call it after the dropped values' last references are gone; returns whether it trimmed.
    """
    if dropped < TRIM_FROM_BYTES:
        return False
    return return_freed_memory(f"{reason} ({dropped / (1 << 20):.0f} MiB dropped)")
