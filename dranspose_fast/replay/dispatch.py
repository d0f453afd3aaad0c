"""Which replay worker gets which event: dranspose 0.2's spread, or the live binding engine."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Protocol

import numpy as np

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
        return ((int(self.rng.random() * self.nworkers), streams),)


class MapDispatcher:
    """Bind events to workers with the compiled trigger map, as the live controller does.

    Every replay worker is registered with the engine under its name (tags ``generic`` unless
    ``worker_tags`` says otherwise) and starts with ``window`` credits; the deliveries of an
    event are credited back once it is routed, because the replay processes it before the
    next.  A stream whose cell is ``null`` in the map but which has a frame in the recording is
    not delivered and counted in ``mismatched_frames``; an event beyond the map in
    ``unmapped``.
    """

    def __init__(
        self,
        map_file: str | os.PathLike[str],
        worker_names: list[str],
        worker_tags: Sequence[Sequence[str]] | None = None,
        window: int = 16,
    ) -> None:
        from dranspose_fast.mapping import BindingEngine, MappingSequence

        self.sequence = MappingSequence.from_file(os.fspath(map_file))
        self.engine = BindingEngine(self.sequence)
        self.index: dict[str, int] = {}
        for i, name in enumerate(worker_names):
            tags = worker_tags[i] if worker_tags is not None else ("generic",)
            self.engine.add_worker(name, tags)
            self.engine.grant(name, window)
            self.index[name] = i
        self.streams = list(self.sequence.streams)
        self.unmapped = 0
        self.mismatched_frames = 0
        self._first = 0
        self._present = np.zeros((0, len(self.streams)), np.uint8)
        self._masks = np.zeros((0, len(self.streams)), np.uint64)
        self._slots = {slot: self.index[name] for name, slot in self.engine.workers.items()}

    def _fill(self, event_number: int) -> bool:
        """Bind until ``event_number`` is emitted; False if the map ends before it."""
        while event_number >= self._first + len(self._present):
            if self.engine.finished:
                return False
            batch = self.engine.bind()
            if batch.count == 0:
                # Everything the credits allow is emitted and routed: nobody can take more,
                # which only happens when no worker has the tags an event needs.
                return False
            keep = max(0, event_number - batch.first_event)
            self._first = batch.first_event + keep
            self._present = batch.present[keep:]
            self._masks = batch.masks[keep:]
        return True

    def route(self, event_number: int, streams: Streams) -> Route:
        if event_number < self._first or not self._fill(event_number):
            self.unmapped += 1
            return ()
        row = event_number - self._first
        present = self._present[row]
        masks = self._masks[row]
        parts: dict[int, Streams] = {}
        receivers: set[int] = set()
        for s, name in enumerate(self.streams):
            if not present[s]:
                self.mismatched_frames += name in streams
                continue
            mask, slot = int(masks[s]), 0
            while mask:
                if mask & 1:
                    receivers.add(slot)
                    if name in streams:
                        parts.setdefault(self._slots[slot], {})[name] = streams[name]
                slot += 1
                mask >>= 1
        for slot in receivers:  # processed before the next event: give the credit back
            self.engine.grant(slot, 1)
        return sorted(parts.items())
