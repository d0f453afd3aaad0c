"""Numba kernels behind :mod:`dranspose_fast.ops`; the only module that imports numba.

Every kernel is ``@njit(cache=True, nogil=True)``, takes arrays the wrappers already validated
(dtype, shape, C order) and only computes.  Preconditions are stated per kernel; nothing here
checks them again.  Results the wrappers must act on come back as plain integer codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numba
import numpy as np
from numba import njit, types

# === Running sums and moments ===


@njit(cache=True, nogil=True)
def sum_stack(acc: Any, stack: Any) -> None:  # pragma: no cover - compiled
    """``acc[p] += stack[f, p]`` for every frame ``f``.  acc: (npix,), stack: (k, npix)."""
    k, npix = stack.shape
    for f in range(k):
        # One frame at a time over a 1-D row: LLVM vectorizes this (a blocked pixel loop
        # over the whole stack measured 6x slower, unvectorized).
        row = stack[f]
        for p in range(npix):
            acc[p] += row[p]


@njit(cache=True, nogil=True)
def stats_stack(
    mean: Any, m2: Any, lo: Any, hi: Any, n0: int, stack: Any
) -> None:  # pragma: no cover - compiled
    """Welford update of per-pixel mean, M2, min and max with ``k`` frames.

    mean, m2, lo, hi: float64 (npix,); n0: frames already folded; stack: (k, npix).
    A NaN pixel value makes that pixel's min and max NaN, as ``np.minimum`` would.
    """
    k, npix = stack.shape
    for f in range(k):
        inv = 1.0 / (n0 + f + 1)
        row = stack[f]
        for p in range(npix):
            x = np.float64(row[p])
            d = x - mean[p]
            mean[p] += d * inv
            m2[p] += d * (x - mean[p])
            if x < lo[p] or x != x:
                lo[p] = x
            if x > hi[p] or x != x:
                hi[p] = x


@njit(cache=True, nogil=True)
def stats_merge(
    mean: Any,
    m2: Any,
    lo: Any,
    hi: Any,
    na: int,
    omean: Any,
    om2: Any,
    olo: Any,
    ohi: Any,
    nb: int,
) -> None:  # pragma: no cover - compiled
    """Fold another partial (``nb`` frames) into this one (``na`` frames), in place.

    Chan et al.'s pairwise update; both counts are > 0 and all arrays have one length.
    """
    n = na + nb
    wb = nb / n
    wab = na * wb
    for p in range(mean.shape[0]):
        d = omean[p] - mean[p]
        mean[p] += d * wb
        m2[p] += om2[p] + d * d * wab
        if olo[p] < lo[p] or olo[p] != olo[p]:
            lo[p] = olo[p]
        if ohi[p] > hi[p] or ohi[p] != ohi[p]:
            hi[p] = ohi[p]


# === Binned maps ===


@njit(cache=True, nogil=True)
def bin_add(
    sums: Any, counts: Any, outside: Any, positions: Any, values: Any, edges: Any, meta: Any
) -> int:  # pragma: no cover - compiled
    """Accumulate events into bins; returns the number of out-of-range events.

    sums: float64 (nbins_total, vlen); counts: int64 (nbins_total,); outside: int64 (d, 2)
    below/above counts per axis; positions: float64 (n, d); values: float64 (n, vlen);
    edges: all axes' edges concatenated, strictly increasing per axis; meta: int64 (d, 3) =
    offset into ``edges``, bin count, 1 if the axis is uniform.  Bin ``j`` is
    ``[e[j], e[j+1])``, the last bin also holds its right edge (``np.histogramdd``).

    If any position is NaN nothing is accumulated and ``-(row + 1)`` of the first is returned.
    """
    n, d = positions.shape
    vlen = values.shape[1]
    for i in range(n):
        for a in range(d):
            if positions[i, a] != positions[i, a]:
                return -(i + 1)
    n_out = 0
    for i in range(n):
        flat = 0
        inside = True
        for a in range(d):
            x = positions[i, a]
            off = meta[a, 0]
            nb = meta[a, 1]
            first = edges[off]
            last = edges[off + nb]
            if x < first:
                outside[a, 0] += 1
                inside = False
                continue
            if x > last:
                outside[a, 1] += 1
                inside = False
                continue
            if meta[a, 2] == 1:
                # Uniform: guess from the width, then settle against the stored edges so the
                # result equals a search of the edges (as numpy's histogram does).
                j = int((x - first) * (nb / (last - first)))
                j = min(max(j, 0), nb - 1)
                while j > 0 and x < edges[off + j]:
                    j -= 1
                while j < nb - 1 and x >= edges[off + j + 1]:
                    j += 1
            else:
                # Largest j in [0, nb-1] with edges[off + j] <= x.
                left = 0
                right = nb - 1
                while left < right:
                    mid = (left + right + 1) >> 1
                    if edges[off + mid] <= x:
                        left = mid
                    else:
                        right = mid - 1
                j = left
            flat = flat * nb + j
        if not inside:
            n_out += 1
            continue
        counts[flat] += 1
        for v in range(vlen):
            sums[flat, v] += values[i, v]
    return n_out


# === Growing buffers ===


@njit(cache=True, nogil=True)
def scatter_rows(data: Any, valid: Any, indices: Any, rows: Any) -> int:  # pragma: no cover
    """``data[indices[i]] = rows[i]`` in order (last wins); returns the number of overwrites.

    data: (capacity, rowlen); valid: bool (capacity,); indices: int64 (n,), each in
    [0, capacity); rows: (n, rowlen) of data's dtype.
    """
    dups = 0
    rowlen = data.shape[1]
    for i in range(indices.shape[0]):
        j = indices[i]
        if valid[j]:
            dups += 1
        else:
            valid[j] = True
        for c in range(rowlen):
            data[j, c] = rows[i, c]
    return dups


# === Specializations for warm-up ===

KERNELS: dict[str, Any] = {
    "sum_stack": sum_stack,
    "stats_stack": stats_stack,
    "stats_merge": stats_merge,
    "bin_add": bin_add,
    "scatter_rows": scatter_rows,
}


def _arr(dtype: Any, ndim: int, readonly: bool = False) -> Any:
    return types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C", readonly=readonly)


def signatures(frame_dtypes: Iterable[Any], readonly: bool) -> list[tuple[Any, tuple[Any, ...]]]:
    """Every (kernel, argument types) pair the wrappers produce for these frame dtypes.

    Mirrors the wrappers: running sums use a float64 accumulator, binned maps always see
    writable float64 positions and values, growing buffers get rows of their own dtype.
    """
    f64, i64 = _arr(np.float64, 1), types.int64
    out: list[tuple[Any, tuple[Any, ...]]] = [
        (stats_merge, (f64, f64, f64, f64, i64) * 2),
        (
            bin_add,
            (
                _arr(np.float64, 2),
                _arr(np.int64, 1),
                _arr(np.int64, 2),
                _arr(np.float64, 2),
                _arr(np.float64, 2),
                f64,
                _arr(np.int64, 2),
            ),
        ),
    ]
    for dt in dict.fromkeys(np.dtype(d) for d in frame_dtypes):
        for ro in (False, True) if readonly else (False,):
            stack = _arr(dt, 2, ro)
            out.append((sum_stack, (f64, stack)))
            out.append((stats_stack, (f64, f64, f64, f64, i64, stack)))
            out.append((scatter_rows, (_arr(dt, 2), _arr(np.bool_, 1), _arr(np.int64, 1), stack)))
    return out
