"""Stub of the compiled STINS kernels (``_ext/_stins.pyx``)."""

from collections.abc import Sequence
from typing import Any, Final, TypeVar

import numpy as np
from typing_extensions import Buffer

#: Largest number of dimensions numpy accepts (64 on numpy 2).
MAX_NDIM: Final[int]

M = TypeVar("M")

def image_nbytes(shape: Sequence[int], itemsize: int) -> int:
    """Bytes of an image of ``shape`` with ``itemsize``-byte items; ``DecodeError`` if invalid."""

def image_view(
    buffer: Buffer, dtype: np.dtype[Any], shape: Sequence[int]
) -> np.ndarray[Any, np.dtype[Any]]:
    """Zero-copy C-ordered view of ``buffer``; ``DecodeError`` unless its size matches exactly."""

def new_model(
    cls: type[M],
    values: dict[str, Any],
    names: frozenset[str],
    private: dict[str, Any] | None,
    more: dict[str, Any] | None = None,
) -> M:
    """Instance of ``cls`` from checked ``values`` (may become its ``__dict__``), no validation."""
