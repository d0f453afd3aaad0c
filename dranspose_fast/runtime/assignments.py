"""The reading of a scan's assignment stream, shared by the ingester and the worker."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import redis

from dranspose_fast.runtime.redis_messages import Keys
from dranspose_fast.runtime.service import RECONNECT_DELAY, Entry, Service

__all__ = ["AssignmentReader"]


class AssignmentReader:
    """Follows the current scan's assignment stream (``dfast:assigned:<uuid>``) of a service.

    Reads from the stream's first entry, ``count`` entries per call, and hands each non-empty
    read to ``on_entries(uuid, entries)`` in order, in its own thread (``run``). ``follow``
    names the scan to read (``None``: idle); an idle reader is woken at once by ``follow``,
    a busy one by the controller's update (``Service.read_or_update``). The position lives
    in the reader, so a retry after a Redis error (or a restarted ``run``) hands no entry over
    twice.
    """

    def __init__(
        self, service: Service, count: int,
        on_entries: Callable[[uuid.UUID, list[Entry]], None],
    ) -> None:
        self.service = service
        self.count = count
        self.on_entries = on_entries
        self.target: uuid.UUID | None = None
        self._changed = threading.Event()
        self._current: uuid.UUID | None = None
        self._last: bytes = b"0-0"  # id of the last entry handed over

    def follow(self, uid: uuid.UUID | None) -> None:
        self.target = uid
        self._changed.set()

    def wake(self) -> None:
        """Make an idle reader look at ``stop_event`` (for closing)."""
        self._changed.set()

    def run(self) -> None:
        svc = self.service
        while not svc.stop_event.is_set():
            if self.target != self._current:
                self._current, self._last = self.target, b"0-0"
            current = self._current
            if current is None:
                self._changed.wait(0.05)
                self._changed.clear()
                continue
            key = Keys.assigned(current)
            try:
                entries = svc.read_or_update(key, self._last, count=self.count, block_ms=100)
            except redis.RedisError as exc:
                svc.log.warning("reading %s failed (%s); retrying", key, exc)
                svc.stop_event.wait(RECONNECT_DELAY)
                continue
            if entries:
                self._last = entries[-1][0]
                self.on_entries(current, entries)
