"""Operations at acquisition speed: stateful helpers for workers and reducers.

``RunningSum`` / ``RunningStats`` fold frames into per-pixel sums and moments,
``BinnedMap`` bins per-event values by motor position, and ``GrowingBuffer`` collects rows
that arrive out of order.  The partial results of several workers combine with ``merge``.
Python classes validate and allocate; Numba kernels (``nogil``, so threads may overlap them)
do the loops.

Importing this package imports numba (``import dranspose_fast`` alone does not).

Compiled kernels are cached on disk (``cache=True``), so only the first process that uses a
kernel for a given dtype pays the JIT (about a second each); later processes load it in a
few milliseconds.  Numba chooses the directory, first match wins:

1. a subdirectory of ``$NUMBA_CACHE_DIR`` named after this package's directory, when the
   environment variable is set *before* numba is first imported;
2. ``dranspose_fast/ops/__pycache__`` when that directory is writable;
3. the user cache, ``~/.cache/numba/...`` on Linux.

:func:`cache_dir` reports the directory in use and :func:`cache_stats` the hits and misses.
Call :func:`warmup` in a reducer's or worker's ``__init__`` so no event waits for a kernel
to compile or load.  Editing ``_kernels.py`` invalidates the cache.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from dranspose_fast.ops import _kernels
from dranspose_fast.ops._common import OpsError
from dranspose_fast.ops.binned import BinnedMap
from dranspose_fast.ops.buffer import GrowingBuffer
from dranspose_fast.ops.stats import RunningStats, RunningSum

__all__ = [
    "COMMON_DTYPES",
    "BinnedMap",
    "GrowingBuffer",
    "OpsError",
    "RunningStats",
    "RunningSum",
    "cache_dir",
    "cache_stats",
    "warmup",
]

#: Frame dtypes :func:`warmup` prepares by default (detector images, ROI sums, counters).
COMMON_DTYPES: tuple[np.dtype[np.generic], ...] = tuple(
    np.dtype(t) for t in (np.float32, np.float64, np.uint16, np.uint32, np.int32, np.int64)
)


def warmup(dtypes: Iterable[npt.DTypeLike] | None = None, *, readonly: bool = True) -> int:
    """Compile, or load from the disk cache, every kernel specialization for ``dtypes``.

    Covers ``RunningSum`` (float64 accumulator), ``RunningStats``, ``BinnedMap`` and
    ``GrowingBuffer`` as the classes call them.  Other accumulator dtypes compile on first use.

    Parameters
    ----------
    dtypes : iterable of dtype, optional
        Frame / row dtypes; :data:`COMMON_DTYPES` by default.
    readonly : bool, default True
        Also prepare read-only inputs, which is what frames received from ZeroMQ
        (``np.frombuffer``) are.

    Returns
    -------
    int
        Number of specializations now ready.

    Examples
    --------
    >>> from dranspose_fast import ops
    >>> ops.warmup([np.uint16]) > 0
    True
    """
    chosen = COMMON_DTYPES if dtypes is None else tuple(np.dtype(d) for d in dtypes)
    sigs = _kernels.signatures(chosen, readonly)
    for kernel, sig in sigs:
        kernel.compile(sig)
    return len(sigs)


def cache_stats() -> dict[str, tuple[int, int]]:
    """Per kernel, ``(cache hits, cache misses)`` of this process.

    A miss means the kernel was compiled here (and then saved); a hit that it was loaded.
    """
    out = {}
    for name, kernel in _kernels.KERNELS.items():
        stats = kernel.stats
        out[name] = (sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
    return out


def cache_dir() -> str:
    """Directory numba reads and writes this package's compiled kernels in."""
    return str(_kernels.sum_stack.stats.cache_path)
