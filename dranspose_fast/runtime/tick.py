"""The tick clock: ``process_event``'s ``tick`` is true for one event per interval, across workers.

One idea, one class per place the workers share the clock:

* ``TickClock``: workers in one process (threads), or in the processes of a replay pool when
  given a ``new_shared_tick()`` (a double in shared memory, with its lock);
* ``RedisTickClock``: networked workers; ``SET key NX PX`` wins the tick.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import redis

__all__ = ["RedisTickClock", "TickClock", "new_shared_tick"]


class _Last:
    """The time of the last tick in this process, with its lock (a shared value's interface)."""

    def __init__(self) -> None:
        self.value = 0.0
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


def new_shared_tick() -> Any:
    """The last tick's time in shared memory, for ``TickClock`` in several processes."""
    return multiprocessing.get_context("spawn").Value("d", 0.0)


class TickClock:
    """One tick per interval among the workers that share ``last`` (this process by default)."""

    def __init__(self, last: Any = None) -> None:
        self._last = last if last is not None else _Last()

    def claim(self, interval: float) -> bool:
        now = time.time()
        last = self._last
        with last.get_lock():
            if last.value + interval < now:
                last.value = now
                return True
        return False


class RedisTickClock(TickClock):
    """The distributed tick: ``SET key NX PX`` wins it; a loser caches the key's PTTL."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        super().__init__()
        self.client = client
        self.key = key
        self._quiet_until = 0.0

    def claim(self, interval: float) -> bool:
        now = time.monotonic()
        if now < self._quiet_until:
            return False
        ms = max(1, int(interval * 1000))
        try:
            if self.client.set(self.key, b"1", nx=True, px=ms):
                self._quiet_until = now + ms / 1000
                return True
            ttl = int(self.client.pttl(self.key))
        except redis.RedisError:
            self._quiet_until = now + ms / 1000
            return False
        # -2: the key just expired (ask again next event); -1 cannot happen with PX.
        self._quiet_until = now + (ms if ttl == -1 else max(ttl, 0)) / 1000
        return False
