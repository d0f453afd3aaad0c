"""Stub of the compiled trigger map (``_ext/_triggermap.pyx``)."""

import numpy as np
import numpy.typing as npt

__all__ = ["TriggerMap"]

class TriggerMap:
    n_streams: int
    closed: bool
    n_parts: int
    n_instances: int
    def __init__(self, n_streams: int) -> None: ...
    @property
    def n_events(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def add_part(
        self,
        kind: npt.NDArray[np.uint8],
        cell_ptr: npt.NDArray[np.int64],
        vw_cons: npt.NDArray[np.int32],
        vw_mask: npt.NDArray[np.uint64],
        n_events: int,
        n_cons: int,
    ) -> int: ...
    def append(self, parts: npt.NDArray[np.int32]) -> None: ...
    def close(self) -> None: ...
    def part_info(self, p: int) -> tuple[int, int, int]: ...
    def part_constraints(
        self, p: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64], npt.NDArray[np.int64]]: ...
    def sequence(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def locate(self, evn: int) -> tuple[int, int, int]: ...
    def part_cells(
        self, p: int
    ) -> tuple[
        npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int32],
        npt.NDArray[np.uint64],
    ]: ...
    def event_cells(
        self, p: int, local_event: int
    ) -> tuple[
        npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int32],
        npt.NDArray[np.uint64],
    ]: ...
    def pool_sizes(self) -> dict[str, int]: ...
