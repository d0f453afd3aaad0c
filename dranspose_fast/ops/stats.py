"""Per-pixel running sums and moments over a stream of frames, mergeable across workers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from dranspose_fast.ops import _kernels
from dranspose_fast.ops._common import OpsError, check_cast, numeric_dtype, real_array, shape_tuple

__all__ = ["RunningStats", "RunningSum"]


class _FrameFold:
    """Shape bookkeeping shared by the accumulators: fixed by ``shape=`` or the first frame."""

    def __init__(self, shape: int | tuple[int, ...] | None) -> None:
        self._shape: tuple[int, ...] | None = None
        self._npix = 0
        self._count = 0
        if shape is not None:
            self._allocate(shape_tuple(shape, "shape"))

    def _allocate(self, shape: tuple[int, ...]) -> None:
        self._shape = shape
        self._npix = math.prod(shape)

    def _check_dtype(self, dtype: np.dtype[Any], name: str) -> None:
        """Subclasses refuse dtypes their state cannot hold."""

    def _as_stack(self, data: npt.ArrayLike, name: str, single: bool) -> npt.NDArray[Any]:
        """Validate one frame or a stack and return it as a C-ordered (k, npix) view."""
        arr = real_array(data, name)
        if single:
            fshape = arr.shape
        elif arr.ndim == 0:
            raise OpsError(
                f"{name}: expected an array of shape (n_frames, *frame_shape), got a scalar"
            )
        else:
            fshape = arr.shape[1:]
        self._check_dtype(arr.dtype, name)
        if self._shape is None:
            self._allocate(fshape)
        elif fshape != self._shape:
            raise OpsError(
                f"{name}: frame shape {fshape} does not match the accumulator's shape {self._shape}"
            )
        k = 1 if single else arr.shape[0]
        return np.ascontiguousarray(arr).reshape(k, self._npix)

    def _require_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            raise OpsError(
                f"{type(self).__name__} has no shape yet: add a frame or pass shape= to the "
                "constructor"
            )
        return self._shape

    def _check_other(self, other: object) -> None:
        if type(other) is not type(self):
            raise OpsError(f"other: expected a {type(self).__name__}, got {type(other).__name__}")
        assert isinstance(other, _FrameFold)
        if other._shape is not None and self._shape is not None and other._shape != self._shape:
            raise OpsError(f"other: shape {other._shape} does not match this shape {self._shape}")

    @property
    def count(self) -> int:
        """Number of frames folded in so far."""
        return self._count

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Frame shape, or None before the first frame when no ``shape`` was given."""
        return self._shape


class RunningSum(_FrameFold):
    """Per-pixel sum of frames and the number of frames.

    Parameters
    ----------
    shape : int or tuple of int, optional
        Frame shape.  Taken from the first frame when omitted.
    dtype : dtype, default float64
        Accumulator dtype.  Frames of any real dtype of the same or a lower kind are accepted
        (no float frames into an integer accumulator).  Integer accumulators wrap on overflow.

    Notes
    -----
    ``sum`` is a live view of the accumulator.  ``add_many`` saves only the per-call overhead
    (a few microseconds) over adding frames one by one.

    Examples
    --------
    >>> import numpy as np
    >>> acc = RunningSum()
    >>> acc.add(np.ones((2, 3), dtype=np.uint16))
    >>> acc.add_many(np.full((2, 2, 3), 2, dtype=np.uint16))
    >>> acc.count, float(acc.sum[0, 0]), float(acc.mean[1, 2])
    (3, 5.0, 1.6666666666666667)
    """

    def __init__(
        self, shape: int | tuple[int, ...] | None = None, dtype: npt.DTypeLike = np.float64
    ) -> None:
        self._dtype = numeric_dtype(dtype, "dtype")
        self._acc: npt.NDArray[Any] = np.zeros(0, dtype=self._dtype)
        super().__init__(shape)

    def _allocate(self, shape: tuple[int, ...]) -> None:
        super()._allocate(shape)
        self._acc = np.zeros(self._npix, dtype=self._dtype)

    def _check_dtype(self, dtype: np.dtype[Any], name: str) -> None:
        check_cast(dtype, self._dtype, name)

    def add(self, frame: npt.ArrayLike) -> None:
        """Add one frame.

        Parameters
        ----------
        frame : array_like
            Real numeric array of the accumulator's shape.

        Raises
        ------
        OpsError
            If the shape differs or the dtype cannot be held by the accumulator.
        """
        arr = self._as_stack(frame, "frame", single=True)  # may allocate self._acc: call first
        _kernels.sum_stack(self._acc, arr)
        self._count += 1

    def add_many(self, stack: npt.ArrayLike) -> None:
        """Add every frame of ``stack``, shaped ``(n_frames, *shape)``.

        Raises
        ------
        OpsError
            If the frame shape or dtype does not fit (see :meth:`add`).
        """
        arr = self._as_stack(stack, "stack", single=False)
        _kernels.sum_stack(self._acc, arr)
        self._count += arr.shape[0]

    def merge(self, other: RunningSum) -> None:
        """Add another partial sum (e.g. one worker's) to this one.

        Raises
        ------
        OpsError
            If ``other`` is not a RunningSum, has another shape or a dtype this one cannot hold.
        """
        self._check_other(other)
        if other._shape is None:
            return
        if self._shape is None:
            self._allocate(other._shape)
        check_cast(other._dtype, self._dtype, "other")
        np.add(self._acc, other._acc, out=self._acc, casting="same_kind")
        self._count += other._count

    def reset(self) -> None:
        """Zero the sum and the count, keeping shape and dtype."""
        self._acc[:] = 0
        self._count = 0

    @property
    def dtype(self) -> np.dtype[Any]:
        """Accumulator dtype."""
        return self._dtype

    @property
    def sum(self) -> npt.NDArray[Any]:
        """Live view of the per-pixel sum, shaped like a frame."""
        return self._acc.reshape(self._require_shape())

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """Per-pixel mean as a new float64 array (NaN before any frame)."""
        shape = self._require_shape()
        if self._count == 0:
            return np.full(shape, np.nan)
        return (self._acc / self._count).reshape(shape)

    def __repr__(self) -> str:
        return f"RunningSum(shape={self._shape}, dtype={self._dtype}, count={self._count})"


class RunningStats(_FrameFold):
    """Per-pixel count, mean, variance, minimum and maximum of frames (Welford's method).

    State is float64 whatever the frame dtype, so integers beyond 2**53 lose precision.
    Partial statistics from several workers combine exactly with :meth:`merge` (Chan et al.).

    Parameters
    ----------
    shape : int or tuple of int, optional
        Frame shape.  Taken from the first frame when omitted.

    Notes
    -----
    A NaN pixel makes that pixel's mean, variance, min and max NaN from then on.

    Examples
    --------
    >>> import numpy as np
    >>> st = RunningStats()
    >>> st.add_many(np.array([[1.0, 2.0], [3.0, 6.0]]))
    >>> st.mean.tolist(), st.variance().tolist(), st.max.tolist()
    ([2.0, 4.0], [1.0, 4.0], [3.0, 6.0])
    """

    def __init__(self, shape: int | tuple[int, ...] | None = None) -> None:
        self._mean: npt.NDArray[np.float64] = np.zeros(0)
        self._m2: npt.NDArray[np.float64] = np.zeros(0)
        self._lo: npt.NDArray[np.float64] = np.zeros(0)
        self._hi: npt.NDArray[np.float64] = np.zeros(0)
        super().__init__(shape)

    def _allocate(self, shape: tuple[int, ...]) -> None:
        super()._allocate(shape)
        self._mean = np.zeros(self._npix)
        self._m2 = np.zeros(self._npix)
        self._lo = np.full(self._npix, np.inf)
        self._hi = np.full(self._npix, -np.inf)

    def add(self, frame: npt.ArrayLike) -> None:
        """Fold one frame of any real dtype into the statistics.

        Raises
        ------
        OpsError
            If the shape differs from earlier frames or the dtype is not real numeric.
        """
        arr = self._as_stack(frame, "frame", single=True)
        _kernels.stats_stack(self._mean, self._m2, self._lo, self._hi, self._count, arr)
        self._count += 1

    def add_many(self, stack: npt.ArrayLike) -> None:
        """Fold every frame of ``stack``, shaped ``(n_frames, *shape)``.

        Raises
        ------
        OpsError
            If the frame shape or dtype does not fit (see :meth:`add`).
        """
        arr = self._as_stack(stack, "stack", single=False)
        _kernels.stats_stack(self._mean, self._m2, self._lo, self._hi, self._count, arr)
        self._count += arr.shape[0]

    def merge(self, other: RunningStats) -> None:
        """Combine another partial result (e.g. one worker's) into this one.

        Raises
        ------
        OpsError
            If ``other`` is not a RunningStats or has another shape.
        """
        self._check_other(other)
        if other._shape is None or other._count == 0:
            return
        if self._shape is None:
            self._allocate(other._shape)
        if self._count == 0:
            for mine, theirs in zip(self._state(), other._state(), strict=True):
                mine[:] = theirs
        else:
            _kernels.stats_merge(
                self._mean,
                self._m2,
                self._lo,
                self._hi,
                self._count,
                other._mean,
                other._m2,
                other._lo,
                other._hi,
                other._count,
            )
        self._count += other._count

    def _state(self) -> tuple[npt.NDArray[np.float64], ...]:
        return self._mean, self._m2, self._lo, self._hi

    def reset(self) -> None:
        """Forget every frame, keeping the shape."""
        if self._shape is not None:
            self._allocate(self._shape)
        self._count = 0

    def _out(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        shape = self._require_shape()
        if self._count == 0:
            return np.full(shape, np.nan)
        return values.reshape(shape).copy()

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """Per-pixel mean (new array; NaN before any frame)."""
        return self._out(self._mean)

    @property
    def sum(self) -> npt.NDArray[np.float64]:
        """Per-pixel sum, ``mean * count`` (new array)."""
        return self._out(self._mean * self._count)

    @property
    def min(self) -> npt.NDArray[np.float64]:
        """Per-pixel minimum (new array; NaN before any frame)."""
        return self._out(self._lo)

    @property
    def max(self) -> npt.NDArray[np.float64]:
        """Per-pixel maximum (new array; NaN before any frame)."""
        return self._out(self._hi)

    def variance(self, ddof: int = 0) -> npt.NDArray[np.float64]:
        """Per-pixel variance ``M2 / (count - ddof)``; NaN while ``count <= ddof``.

        Parameters
        ----------
        ddof : int, default 0
            Delta degrees of freedom, as in ``np.var``.
        """
        shape = self._require_shape()
        if ddof < 0:
            raise OpsError(f"ddof: must be >= 0, got {ddof}")
        if self._count - ddof <= 0:
            return np.full(shape, np.nan)
        return (self._m2 / (self._count - ddof)).reshape(shape)

    def std(self, ddof: int = 0) -> npt.NDArray[np.float64]:
        """Per-pixel standard deviation, the square root of :meth:`variance`."""
        return np.sqrt(self.variance(ddof))

    def __repr__(self) -> str:
        return f"RunningStats(shape={self._shape}, count={self._count})"
