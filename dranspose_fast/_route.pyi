"""Stub of the compiled route-and-pack step (``_ext/_route.pyx``)."""

from typing import Any

import numpy as np
import numpy.typing as npt

from dranspose_fast.errors import UsageError

class RouteError(UsageError): ...

def route_pack(
    present: npt.NDArray[np.uint8],
    masks: npt.NDArray[np.uint64],
    pos: int,
    max_rows: int,
    first_event: int,
    messages: list[list[list[Any]]],
    taken: npt.NDArray[np.intp],
    valid_slots: int,
    threshold: int,
) -> tuple[int, int, int, int, int, int, list[tuple[int, bytes, bytes, list[Any], int]]]:
    """Route rows ``pos..`` while their messages are drained; per-slot packed batches."""
