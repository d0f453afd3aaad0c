"""Pieces of the networked worker that hold no sockets and no threads.

Event assembly, the distributed tick, reading the configs the worker discovers its peers
from, and picking this worker's events out of an assignment batch. ``worker_service.Worker``
wires them to ZeroMQ and Redis; here they are plain objects, tested on their own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis

from dranspose_fast.event import StreamData
from dranspose_fast.protocol import IngesterState, ReducerState, WorkerState
from dranspose_fast.protocol_redis import AssignmentBatch, Keys
from dranspose_fast.usercode import TickClock

__all__ = [
    "Assembler", "NoClass", "PartialEvent", "RedisTickClock", "WorkerServiceState", "events_for",
    "read_ingesters", "read_reducer",
]

PartialEvent = tuple[int, dict[str, StreamData]]


class WorkerServiceState(WorkerState):
    """``WorkerState`` plus the counters a worker publishes in its config."""

    results_sent: int = 0
    user_errors: int = 0
    malformed_batches: int = 0
    dropped_old_scan: int = 0
    duplicate_streams: int = 0
    bad_assignments: int = 0
    bad_configs: int = 0
    class_errors: int = 0
    class_error: str | None = None
    ingester_reconnects: int = 0
    results_queued: int = 0
    waiting_events: int = 0


class NoClass:
    """Stand-in when no worker class is given or it cannot be loaded: no results."""

    def process_event(self, event: Any, parameters: Any) -> None:
        return None



class Assembler:
    """Merges partial events once the assignment says how many streams each event has."""

    def __init__(self) -> None:
        self.expected: dict[int, int] = {}
        self.pending: dict[int, dict[str, StreamData]] = {}
        self.duplicates = 0

    def expect(self, events: Sequence[int], counts: Sequence[int]) -> list[PartialEvent]:
        """Record assignments; return the events whose data had already arrived in full."""
        ready: list[PartialEvent] = []
        pending = self.pending
        for evn, count in zip(events, counts, strict=True):
            have = pending.get(evn)
            if have is not None and len(have) >= count:
                del pending[evn]
                ready.append((evn, have))
            else:
                self.expected[evn] = count
        return ready

    def add(self, events: Sequence[PartialEvent]) -> list[PartialEvent]:
        """Add received partial events; return those now complete, in arrival order."""
        ready: list[PartialEvent] = []
        expected = self.expected
        pending = self.pending
        for evn, streams in events:
            have = pending.get(evn)
            if have is None:
                count = expected.get(evn)
                if count is not None and len(streams) >= count:
                    del expected[evn]  # the common case: one ingester, nothing buffered
                    ready.append((evn, streams))
                else:
                    pending[evn] = streams
                continue
            for name, data in streams.items():
                if name in have:
                    self.duplicates += 1
                else:
                    have[name] = data
            count = expected.get(evn)
            if count is not None and len(have) >= count:
                del expected[evn]
                del pending[evn]
                ready.append((evn, have))
        return ready

    @property
    def waiting(self) -> int:
        """Events assigned or partly received but not complete."""
        return len(self.expected) + len(self.pending)


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


def events_for(batch: AssignmentBatch, name: str) -> tuple[list[int], list[int]] | None:
    """The events of ``batch`` that ``name`` gets and how many streams each carries.

    Returns None when the worker gets nothing. Raises ``ValueError`` when its slot does not
    fit the 64-bit masks.
    """
    if name not in batch.workers:
        return None
    slot = batch.workers.index(name)
    if slot >= 64:
        raise ValueError(f"worker {name!r} has slot {slot}, which does not fit a 64-bit mask")
    bits = (batch.masks >> np.uint64(slot)) & np.uint64(1)
    counts = (bits.astype(bool) & (batch.present != 0)).sum(axis=1)
    rows = np.flatnonzero(counts)
    if not rows.size:
        return None
    return (rows + batch.first_event).tolist(), counts[rows].tolist()


def read_ingesters(client: redis.Redis) -> tuple[dict[str, IngesterState], list[str]]:
    """Every live ingester's config by name, and one message per config that did not parse."""
    keys = list(client.scan_iter(match=Keys.config_pattern("ingester"), count=1000))
    found: dict[str, IngesterState] = {}
    bad: list[str] = []
    if not keys:
        return found, bad
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            st = IngesterState.model_validate_json(raw)
        except ValueError as exc:
            bad.append(f"malformed config {key!r}: {exc}")
            continue
        found[str(st.name)] = st
    return found, bad


def read_reducer(client: redis.Redis) -> tuple[ReducerState | None, str | None]:
    """The reducer's config (None while there is none), and an error message if it is bad."""
    raw = client.get(Keys.config("reducer", "reducer"))
    if raw is None:
        return None, None
    try:
        return ReducerState.model_validate_json(raw), None
    except ValueError as exc:
        return None, f"malformed reducer config: {exc}"
