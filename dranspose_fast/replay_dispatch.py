"""Which replay worker gets which event: dranspose 0.2's spread, or the live binding engine."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Protocol

from dranspose_fast.event import StreamData

Streams = dict[str, StreamData]
Route = Sequence[tuple[int, Streams]]


class Dispatcher(Protocol):
    #: events of the input that the map does not cover (counted, not delivered)
    unmapped: int

    def route(self, event_number: int, streams: Streams) -> Route:
        """``[(worker index, streams for that worker), ...]`` for one event."""
        ...


class SpreadDispatcher:
    """dranspose 0.2's replay: the first event to every worker, then one random worker each."""

    def __init__(self, nworkers: int, broadcast_first: bool, rng: random.Random) -> None:
        if nworkers < 1:
            raise ValueError(f"need at least one worker, got {nworkers}")
        self.nworkers = nworkers
        self.first = broadcast_first
        self.rng = rng
        self.unmapped = 0

    def route(self, event_number: int, streams: Streams) -> Route:
        if self.first:
            self.first = False
            return [(i, streams) for i in range(self.nworkers)]
        return ((self.rng.randrange(self.nworkers), streams),)


class MapDispatcher:
    """Bind events to workers with the compiled trigger map, as the live controller does."""

    def __init__(self, map_file: str | os.PathLike[str], worker_names: list[str]) -> None:
        raise NotImplementedError

    unmapped = 0

    def route(self, event_number: int, streams: Streams) -> Route:
        raise NotImplementedError
