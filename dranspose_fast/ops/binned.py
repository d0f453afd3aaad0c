"""Maps binned by motor position: per-bin sums and counts of per-event values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from dranspose_fast.ops import _kernels
from dranspose_fast.ops._common import OpsError, real_array, shape_tuple, writable_f64

__all__ = ["BinnedMap", "Range"]

Range = tuple[float, float]


def _uniform_edges(
    bins: int | Sequence[int] | None, range_: Range | Sequence[Range] | None
) -> list[npt.NDArray[np.float64]]:
    if bins is None or range_ is None:
        raise OpsError("edges: give explicit edges, or both bins= and range=")
    lims = real_array(range_, "range").astype(np.float64)
    if lims.shape == (2,):
        lims = lims.reshape(1, 2)
    if lims.ndim != 2 or lims.shape[1] != 2 or lims.shape[0] == 0:
        raise OpsError(f"range: expected (lo, hi) or one (lo, hi) per axis, got shape {lims.shape}")
    counts = shape_tuple(bins, "bins")
    if np.ndim(bins) == 0:
        counts = counts * lims.shape[0]
    if len(counts) != lims.shape[0]:
        raise OpsError(f"bins: {len(counts)} bin counts for {lims.shape[0]} axes of range")
    out = []
    for axis, ((lo, hi), n) in enumerate(zip(lims, counts, strict=True)):
        if n < 1:
            raise OpsError(f"bins[{axis}]: need at least one bin, got {n}")
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise OpsError(f"range[{axis}]: need finite lo < hi, got ({lo}, {hi})")
        out.append(np.linspace(lo, hi, n + 1))
    return out


def _explicit_edges(edges: Any) -> list[npt.NDArray[np.float64]]:
    try:
        per_axis = [edges] if np.ndim(edges[0]) == 0 else list(edges)
    except (TypeError, IndexError, KeyError) as exc:
        raise OpsError("edges: expected a 1-D array of edges or one array per axis") from exc
    if not per_axis:
        raise OpsError("edges: no axes given")
    out = []
    for axis, e in enumerate(per_axis):
        arr = real_array(e, f"edges[{axis}]").astype(np.float64)
        if arr.ndim != 1 or arr.shape[0] < 2:
            raise OpsError(f"edges[{axis}]: need a 1-D array of at least 2 edges, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise OpsError(f"edges[{axis}]: edges must be finite (NaN or inf found)")
        bad = np.flatnonzero(np.diff(arr) <= 0)
        if bad.size:
            i = int(bad[0])
            raise OpsError(
                f"edges[{axis}]: edges must increase strictly; edge {i + 1} ({arr[i + 1]}) "
                f"follows {arr[i]}"
            )
        out.append(arr)
    return out


class BinnedMap:
    """Sum and count of per-event values in bins of one or more motor positions.

    Bin ``j`` of an axis holds positions ``edges[j] <= x < edges[j+1]``; the last bin also
    holds its right edge, as in ``np.histogramdd``.  Events outside the edges are not binned
    but counted, in total (``out_of_range``) and per axis and side (``outside``).

    Parameters
    ----------
    edges : array_like or sequence of array_like, optional
        Bin edges: one strictly increasing 1-D array (a 1-D map) or one array per axis.
    bins : int or sequence of int, optional
        Number of uniform bins per axis (an int applies to every axis); needs ``range``.
    range : (float, float) or sequence of (float, float), optional
        ``(lo, hi)`` of the uniform bins, one pair per axis.
    value_shape : int or tuple of int, default ()
        Shape of the value each event adds: ``()`` for a scalar such as an ROI sum,
        ``(n,)`` for a spectrum or several ROI sums.

    Examples
    --------
    >>> import numpy as np
    >>> m = BinnedMap(bins=(2, 2), range=((0.0, 1.0), (0.0, 1.0)), value_shape=2)
    >>> m.add([0.2, 0.7], [1.0, 10.0])
    0
    >>> m.add([[0.2, 0.7], [5.0, 0.5]], [[3.0, 30.0], [9.0, 9.0]])
    1
    >>> m.count.tolist(), m.mean[0, 1].tolist(), m.out_of_range
    ([[0, 2], [0, 0]], [2.0, 20.0], 1)
    """

    def __init__(
        self,
        edges: Any = None,
        *,
        bins: int | Sequence[int] | None = None,
        range: Range | Sequence[Range] | None = None,  # numpy's name for it
        value_shape: int | tuple[int, ...] = (),
    ) -> None:
        if edges is not None and (bins is not None or range is not None):
            raise OpsError("edges: give either edges or bins= and range=, not both")
        if edges is not None:
            axes = _explicit_edges(edges)
        else:
            axes = _uniform_edges(bins, range)
        self._edges = tuple(axes)
        for e in self._edges:
            e.flags.writeable = False
        self._shape = tuple(e.shape[0] - 1 for e in axes)
        self._value_shape = shape_tuple(value_shape, "value_shape")
        self._vlen = math.prod(self._value_shape)
        self._edges_flat = np.concatenate(axes)
        offsets = np.cumsum([0] + [e.shape[0] for e in axes[:-1]])
        # Axes whose edges are exactly a linspace get the O(1) bin guess, others bisect.
        uniform = [np.array_equal(e, np.linspace(e[0], e[-1], e.shape[0])) for e in axes]
        self._meta = np.array(
            [[o, n, int(u)] for o, n, u in zip(offsets, self._shape, uniform, strict=True)],
            dtype=np.int64,
        )
        self._sums = np.zeros((math.prod(self._shape), self._vlen))
        self._counts = np.zeros(math.prod(self._shape), dtype=np.int64)
        self._outside = np.zeros((len(axes), 2), dtype=np.int64)
        self._out_of_range = 0

    def add(self, positions: npt.ArrayLike, values: npt.ArrayLike) -> int:
        """Accumulate one event or a batch of events.

        Parameters
        ----------
        positions : array_like
            One event: a scalar (1-D map) or ``(ndim,)``.  A batch: ``(n,)`` (1-D map) or
            ``(n, ndim)``.
        values : array_like
            ``value_shape`` for one event, ``(n, *value_shape)`` for a batch.

        Returns
        -------
        int
            Number of events of this call that fell outside the edges (counted, not binned).

        Raises
        ------
        OpsError
            If a shape does not fit, or a position is NaN (then nothing of the call is added).
        """
        pos = writable_f64(positions, "positions")
        d = len(self._shape)
        if pos.ndim == 0 and d == 1:
            n, single = 1, True
        elif pos.ndim == 1 and d > 1 and pos.shape[0] == d:
            n, single = 1, True
        elif pos.ndim == 1 and d == 1:
            n, single = pos.shape[0], False
        elif pos.ndim == 2 and pos.shape[1] == d:
            n, single = pos.shape[0], False
        else:
            want = "a scalar or (n,)" if d == 1 else f"({d},) or (n, {d})"
            raise OpsError(f"positions: expected {want} for a {d}-D map, got shape {pos.shape}")
        vals = writable_f64(values, "values")
        want_v = self._value_shape if single else (n, *self._value_shape)
        if vals.shape != want_v:
            raise OpsError(
                f"values: expected shape {want_v} for {n} event(s) of value_shape "
                f"{self._value_shape}, got {vals.shape}"
            )
        code: int = _kernels.bin_add(
            self._sums,
            self._counts,
            self._outside,
            pos.reshape(n, d),
            vals.reshape(n, self._vlen),
            self._edges_flat,
            self._meta,
        )
        if code < 0:
            row = -code - 1
            axis = int(np.flatnonzero(np.isnan(pos.reshape(n, d)[row]))[0])
            raise OpsError(f"positions: NaN at event {row} of this call, axis {axis}")
        self._out_of_range += code
        return code

    def merge(self, other: BinnedMap) -> None:
        """Add another map with the same edges and value shape (e.g. one worker's) to this one.

        Raises
        ------
        OpsError
            If ``other`` is not a BinnedMap or its edges or value shape differ.
        """
        if not isinstance(other, BinnedMap):
            raise OpsError(f"other: expected a BinnedMap, got {type(other).__name__}")
        if len(other._edges) != len(self._edges):
            raise OpsError(f"other: {len(other._edges)}-D map cannot merge into {self.ndim}-D")
        for axis, (a, b) in enumerate(zip(self._edges, other._edges, strict=True)):
            if not np.array_equal(a, b):
                raise OpsError(f"other: edges of axis {axis} differ")
        if other._value_shape != self._value_shape:
            raise OpsError(
                f"other: value_shape {other._value_shape} differs from {self._value_shape}"
            )
        self._sums += other._sums
        self._counts += other._counts
        self._outside += other._outside
        self._out_of_range += other._out_of_range

    def reset(self) -> None:
        """Zero sums, counts and out-of-range counters, keeping the edges."""
        self._sums[:] = 0.0
        self._counts[:] = 0
        self._outside[:] = 0
        self._out_of_range = 0

    @property
    def ndim(self) -> int:
        """Number of position axes."""
        return len(self._shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of bins per axis."""
        return self._shape

    @property
    def value_shape(self) -> tuple[int, ...]:
        """Shape of one event's value."""
        return self._value_shape

    @property
    def edges(self) -> tuple[npt.NDArray[np.float64], ...]:
        """Read-only bin edges, one array per axis."""
        return self._edges

    @property
    def centers(self) -> tuple[npt.NDArray[np.float64], ...]:
        """Bin centres, one array per axis."""
        return tuple(0.5 * (e[1:] + e[:-1]) for e in self._edges)

    @property
    def sum(self) -> npt.NDArray[np.float64]:
        """Live view of the per-bin sums, shaped ``(*shape, *value_shape)``."""
        return self._sums.reshape(self._shape + self._value_shape)

    @property
    def count(self) -> npt.NDArray[np.int64]:
        """Live view of the number of events per bin, shaped ``shape``."""
        return self._counts.reshape(self._shape)

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """Per-bin mean of the values as a new array; NaN in empty bins."""
        counts = self._counts[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(counts > 0, self._sums / np.maximum(counts, 1), np.nan)
        return out.reshape(self._shape + self._value_shape)

    @property
    def out_of_range(self) -> int:
        """Events that fell outside the edges on at least one axis."""
        return self._out_of_range

    @property
    def outside(self) -> npt.NDArray[np.int64]:
        """Out-of-range events per axis: ``outside[axis] == (below, above)`` (a copy)."""
        return self._outside.copy()

    @property
    def n_events(self) -> int:
        """Every event added, binned or out of range."""
        return int(self._counts.sum()) + self._out_of_range

    def __repr__(self) -> str:
        return (
            f"BinnedMap(shape={self._shape}, value_shape={self._value_shape}, "
            f"n_events={self.n_events}, out_of_range={self._out_of_range})"
        )
