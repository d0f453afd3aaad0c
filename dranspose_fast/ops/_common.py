"""Validation helpers shared by the ops wrappers (pure numpy; no numba here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from dranspose_fast.errors import DransposeFastError


class OpsError(DransposeFastError, ValueError):
    """Bad input to an ops helper; the message names the argument and what was wrong."""


# Kinds numpy calls bool, signed, unsigned and float: what the kernels accumulate.
_REAL_KINDS = "biuf"


def real_array(value: npt.ArrayLike, name: str) -> npt.NDArray[Any]:
    """``np.asarray(value)`` in native byte order, refusing complex, object and string data."""
    arr = np.asarray(value)
    if arr.dtype.kind not in _REAL_KINDS:
        raise OpsError(f"{name}: dtype {arr.dtype} is not a real numeric dtype")
    if not arr.dtype.isnative:
        # Kernels compute in native byte order only (data read from big-endian files).
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def numeric_dtype(dtype: npt.DTypeLike, name: str, kinds: str = "iuf") -> np.dtype[Any]:
    """Parse ``dtype`` and check its kind is one of ``kinds``."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise OpsError(f"{name}: {dtype!r} is not a numpy dtype") from exc
    if dt.kind not in kinds:
        raise OpsError(f"{name}: dtype {dt} is not supported (need a numeric dtype)")
    return dt


def check_cast(src: np.dtype[Any], dst: np.dtype[Any], name: str) -> None:
    """Refuse conversions that change the kind of number (float data into an integer buffer)."""
    if src != dst and not np.can_cast(src, dst, "same_kind"):
        raise OpsError(f"{name}: cannot store {src} data in a {dst} accumulator without loss")


def shape_tuple(shape: Any, name: str) -> tuple[int, ...]:
    """A shape given as an int or a sequence of non-negative ints."""
    try:
        dims = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise OpsError(f"{name}: {shape!r} is not a shape (int or sequence of ints)") from exc
    if any(s < 0 for s in dims):
        raise OpsError(f"{name}: {dims} has a negative dimension")
    return dims


def writable_f64(value: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    """Small inputs as writable C-ordered float64, so the kernels see one array type."""
    arr = real_array(value, name)
    out = np.asarray(arr, dtype=np.float64, order="C")  # keeps 0-d, unlike ascontiguousarray
    if not out.flags.writeable:
        out = out.copy()
    return out
