"""What an ingester keeps of the batches it sent, until the controller releases them.

Every event batch sent to a worker is kept here (the frames themselves, no copy) under its
*key*: the worker's name, or the key a lost worker's deliveries were rebound under
(``controller.ledger``). A ``Release`` entry frees a key's batches below an event; a
``Rebind`` entry takes a key's batches to resend them to the worker that takes over. When the
window is full (events or bytes) the data loop stops routing until releases come: upstream
back-pressure, with the time blocked counted. Per batch, never per event.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from dranspose_fast.runtime import dataplane

__all__ = ["Kept", "Rebound", "Retention"]


@dataclass(frozen=True, slots=True)
class Rebound:
    """Where the deliveries of a lost worker go: ``target`` takes them as ``key``."""

    key: str
    origin: str
    target: str


@dataclass(frozen=True, slots=True)
class Kept:
    """One sent batch: its last event (an upper bound), event count, size and frames."""

    last_event: int
    nevents: int
    nbytes: int
    frames: list[Any]


class Retention:
    """The retention window of one ingester (``max_events == 0``: keeps nothing)."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.kept: dict[str, deque[Kept]] = {}
        self.events = 0
        self.nbytes = 0
        #: Totals: events released, events resent to a worker that took over, time blocked.
        self.released = 0
        self.resent = 0
        self.blocked_seconds = 0.0
        self._blocked_since: float | None = None

    @property
    def enabled(self) -> bool:
        return self.max_events > 0

    def keep(self, key: str, last_event: int, nevents: int, frames: list[Any]) -> None:
        if not self.enabled:
            return
        nbytes = dataplane.message_bytes(frames)
        queue = self.kept.get(key)
        if queue is None:
            queue = self.kept[key] = deque()
        queue.append(Kept(last_event, nevents, nbytes, frames))
        self.events += nevents
        self.nbytes += nbytes

    def release(self, key: str, below: int) -> None:
        """Free ``key``'s batches whose events are all below ``below``."""
        queue = self.kept.get(key)
        while queue and queue[0].last_event < below:
            self._forget(queue.popleft())
        if queue is not None and not queue:
            del self.kept[key]

    def take(self, key: str) -> list[Kept]:
        """Remove and return every batch kept under ``key`` (to resend them)."""
        queue = self.kept.pop(key, None)
        if not queue:
            return []
        for kept in queue:
            self._forget(kept, released=False)
        return list(queue)

    def clear(self) -> None:
        """A scan ended: nothing it sent can be asked for again."""
        self.kept.clear()
        self.events = self.nbytes = 0
        self.unblock()

    def full(self) -> bool:
        """Whether routing must wait for releases (counted as blocked time while it does)."""
        if self.enabled and (self.events >= self.max_events or self.nbytes >= self.max_bytes):
            if self._blocked_since is None:
                self._blocked_since = time.monotonic()
            return True
        self.unblock()
        return False

    def unblock(self) -> None:
        if self._blocked_since is not None:
            self.blocked_seconds += time.monotonic() - self._blocked_since
            self._blocked_since = None

    def _forget(self, kept: Kept, released: bool = True) -> None:
        self.events -= kept.nevents
        self.nbytes -= kept.nbytes
        if released:
            self.released += kept.nevents
