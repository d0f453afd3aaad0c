"""A table of per-event rows that arrive out of order, growing as event numbers grow."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from dranspose_fast.ops import _kernels
from dranspose_fast.ops._common import OpsError, check_cast, numeric_dtype, real_array, shape_tuple

__all__ = ["GrowingBuffer"]

# Scalars a float buffer takes as they are (bool is an int).
_REAL_SCALARS = (float, int, np.floating, np.integer)


class GrowingBuffer:
    """Rows indexed by event number, stored as they come, in any order.

    Capacity doubles whenever an index lands beyond it (amortised O(1) per row).  Slots not
    written yet hold ``fill_value`` and are False in ``valid``.  Writing a slot twice keeps
    the last row and counts one duplicate.

    Parameters
    ----------
    row_shape : int or tuple of int, default ()
        Shape of one row: ``()`` for a scalar per event, e.g. ``(4,)`` for four ROI sums.
    dtype : dtype, default float64
        Storage dtype.  Rows of the same or a lower kind are accepted.
    start : int, default 0
        Index of the first row (use 1 to store by dranspose event number directly).
    capacity : int, default 1024
        Rows allocated up front.
    fill_value : scalar, optional
        Content of unwritten slots; NaN for float dtypes and 0 otherwise by default.
    max_length : int, optional
        Refuse indices at or beyond ``start + max_length`` instead of allocating for them
        (a guard against a corrupt event number).

    Examples
    --------
    >>> buf = GrowingBuffer(start=1)
    >>> buf.put(3, 30.0)
    >>> buf.put_many([1, 3], [10.0, 31.0])
    >>> buf.array.tolist(), buf.valid.tolist(), buf.duplicates
    ([10.0, nan, 31.0], [True, False, True], 1)
    """

    def __init__(
        self,
        row_shape: int | tuple[int, ...] = (),
        dtype: npt.DTypeLike = np.float64,
        *,
        start: int = 0,
        capacity: int = 1024,
        fill_value: Any = None,
        max_length: int | None = None,
    ) -> None:
        self._row_shape = shape_tuple(row_shape, "row_shape")
        self._rowlen = math.prod(self._row_shape)
        self._dtype = numeric_dtype(dtype, "dtype", kinds="biuf")
        self._float_scalars = self._row_shape == () and self._dtype.kind == "f"
        self._start = operator.index(start)
        if capacity < 1:
            raise OpsError(f"capacity: must be >= 1, got {capacity}")
        if max_length is not None and max_length < 1:
            raise OpsError(f"max_length: must be >= 1, got {max_length}")
        self._max_length = max_length
        if max_length is not None:
            capacity = min(capacity, max_length)
        if fill_value is None:
            fill_value = np.nan if self._dtype.kind == "f" else 0
        try:
            self._fill = np.asarray(fill_value, dtype=self._dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise OpsError(f"fill_value: {fill_value!r} does not fit dtype {self._dtype}") from exc
        if self._fill.ndim:
            raise OpsError(f"fill_value: expected a scalar, got shape {self._fill.shape}")
        self._data = np.full((capacity, *self._row_shape), self._fill, dtype=self._dtype)
        self._valid = np.zeros(capacity, dtype=np.bool_)
        self._length = 0
        self._filled = 0
        self._duplicates = 0
        self._prefix = 0

    def _slot(self, index: Any, name: str) -> int:
        try:
            i = operator.index(index) - self._start
        except TypeError as exc:
            raise OpsError(f"{name}: expected an integer, got {index!r}") from exc
        if i < 0:
            raise OpsError(f"{name}: {index} is below start={self._start}")
        self._reserve(i + 1, name)
        return i

    def _reserve(self, needed: int, name: str) -> None:
        """Make room for ``needed`` rows, doubling the capacity at least."""
        if self._max_length is not None and needed > self._max_length:
            raise OpsError(
                f"{name}: index {needed - 1 + self._start} is beyond max_length="
                f"{self._max_length} rows from start={self._start}"
            )
        cap = self._valid.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, 2 * cap)
        if self._max_length is not None:
            new_cap = min(new_cap, self._max_length)
        data = np.empty((new_cap, *self._row_shape), dtype=self._dtype)
        data[:cap] = self._data
        data[cap:] = self._fill
        valid = np.zeros(new_cap, dtype=np.bool_)
        valid[:cap] = self._valid
        self._data, self._valid = data, valid

    def _check_row_dtype(self, arr: npt.NDArray[Any], name: str) -> None:
        if arr.dtype != self._dtype:
            check_cast(arr.dtype, self._dtype, name)

    def put(self, index: int, row: npt.ArrayLike) -> None:
        """Store one row at ``index`` (last write wins).

        Raises
        ------
        OpsError
            If ``index`` is not an integer >= ``start`` (or beyond ``max_length``), or the
            row's shape or dtype does not fit.
        """
        # One row is cheaper through numpy indexing than through a kernel call, and a real
        # scalar into a float buffer skips building an array (this runs once per event).
        value: Any = row
        if not (self._float_scalars and isinstance(row, _REAL_SCALARS)):
            value = real_array(row, "row")
            if value.shape != self._row_shape:
                raise OpsError(f"row: expected shape {self._row_shape}, got {value.shape}")
            self._check_row_dtype(value, "row")
        i = index - self._start if type(index) is int else -1
        if not 0 <= i < self._valid.shape[0]:
            i = self._slot(index, "index")
        if self._valid[i]:
            self._duplicates += 1
        else:
            self._valid[i] = True
            self._filled += 1
        self._data[i] = value
        if i >= self._length:
            self._length = i + 1

    def put_many(self, indices: npt.ArrayLike, rows: npt.ArrayLike) -> None:
        """Store ``rows[k]`` at ``indices[k]`` for every k, in order (last write wins).

        Parameters
        ----------
        indices : array_like of int, shape (n,)
        rows : array_like, shape ``(n, *row_shape)``

        Raises
        ------
        OpsError
            If an index is below ``start`` or beyond ``max_length``, ``indices`` is not 1-D
            integer, or ``rows`` has the wrong shape or dtype.  Nothing is stored then.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.dtype.kind not in "iu" and idx.size):
            raise OpsError(f"indices: expected a 1-D integer array, got {idx.dtype} {idx.shape}")
        n = idx.shape[0]
        arr = real_array(rows, "rows")
        if arr.shape != (n, *self._row_shape):
            raise OpsError(f"rows: expected shape {(n, *self._row_shape)}, got {arr.shape}")
        self._check_row_dtype(arr, "rows")
        if n == 0:
            return
        lo, hi = int(idx.min()), int(idx.max())
        if lo < self._start:
            raise OpsError(f"indices: {lo} is below start={self._start}")
        self._reserve(hi - self._start + 1, "indices")
        slots = idx.astype(np.int64) - self._start if self._start else idx.astype(np.int64)
        data = np.ascontiguousarray(arr, dtype=self._dtype).reshape(n, self._rowlen)
        dups: int = _kernels.scatter_rows(
            self._data.reshape(self._valid.shape[0], self._rowlen), self._valid, slots, data
        )
        self._duplicates += dups
        self._filled += n - dups
        self._length = max(self._length, hi - self._start + 1)

    @property
    def array(self) -> npt.NDArray[Any]:
        """View of rows ``start`` .. highest index written, shaped ``(len(self), *row_shape)``."""
        return self._data[: self._length]

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        """View of the written-slot mask matching :attr:`array`."""
        return self._valid[: self._length]

    @property
    def indices(self) -> npt.NDArray[np.int64]:
        """Indices (event numbers) of the written rows, ascending."""
        return np.flatnonzero(self.valid) + self._start

    @property
    def contiguous_length(self) -> int:
        """Number of leading rows that are all written (a prefix safe to publish as final)."""
        rest = self._valid[self._prefix : self._length]
        gaps = np.flatnonzero(~rest)
        self._prefix += int(gaps[0]) if gaps.size else rest.shape[0]
        return self._prefix

    @property
    def n_filled(self) -> int:
        """Number of distinct slots written."""
        return self._filled

    @property
    def duplicates(self) -> int:
        """Number of writes to a slot that was already written."""
        return self._duplicates

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return int(self._valid.shape[0])

    @property
    def start(self) -> int:
        """Index of the first row."""
        return self._start

    @property
    def dtype(self) -> np.dtype[Any]:
        """Storage dtype."""
        return self._dtype

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row."""
        return self._row_shape

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return (
            f"GrowingBuffer(length={self._length}, filled={self._filled}, "
            f"duplicates={self._duplicates}, row_shape={self._row_shape}, dtype={self._dtype})"
        )
