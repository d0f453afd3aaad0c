"""Deliveries not yet released, by key: what a lost worker's successor must be given.

A *delivery* is (worker, event): the streams of one event one worker was bound. It is
*released* when the worker has processed it and the reducer has reduced its result; until
then every ingester keeps its frames (``ingester.retention``). Deliveries are grouped by
*key*: a worker's own deliveries have its name as key; when a worker is lost, each key it held
is rebound whole to one live worker under a new key (``origin~n``), so the key says where
the frames are kept and whose done-marks release them.

The worker reports, per key, an event below which every delivery is done
(``CreditMessage.done``) together with its running ``results`` total; that report releases
the deliveries once the reducer's ``reduced`` total for the worker reaches that ``results``
(its results were reduced, not only sent). Everything here is per report or per batch,
never per event; the per-key deliveries are numpy chunks bounded by the retention window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dranspose_fast.runtime.redis_messages import Rebind, Release

_I64 = npt.NDArray[np.int64]


@dataclass
class KeyLedger:
    """The unreleased deliveries of one key, in event order."""

    holder: str
    origin: str
    events: deque[_I64] = field(default_factory=deque)
    counts: deque[_I64] = field(default_factory=deque)
    below: int = -1

    def add(self, events: _I64, counts: _I64) -> None:
        if len(events):
            self.events.append(events)
            self.counts.append(counts)

    def release(self, below: int) -> bool:
        """Drop the deliveries below ``below``; False if it releases nothing new."""
        if below <= self.below:
            return False
        self.below = below
        while self.events:
            chunk = self.events[0]
            cut = int(np.searchsorted(chunk, below, side="left"))
            if cut < len(chunk):
                self.events[0] = chunk[cut:]
                self.counts[0] = self.counts[0][cut:]
                break
            self.events.popleft()
            self.counts.popleft()
        return True

    def unreleased(self) -> tuple[_I64, _I64]:
        if not self.events:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(list(self.events)), np.concatenate(list(self.counts))

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.events)


class Ledger:
    """Every key of a scan, the reports waiting for the reducer, and the releases to publish."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyLedger] = {}
        self._reports: dict[str, deque[tuple[int, dict[str, int]]]] = {}
        self._changed: set[str] = set()
        self._generation = 0

    def deliver(self, worker: str, events: _I64, counts: _I64) -> None:
        """Deliveries emitted to ``worker`` under its own key."""
        ledger = self.keys.get(worker)
        if ledger is None or ledger.holder != worker:
            ledger = self.keys[worker] = KeyLedger(worker, worker)
        ledger.add(events, counts)

    def report(self, worker: str, results: int, done: dict[str, int], reduced: int) -> None:
        """A worker's done-marks, valid once ``reduced`` reaches its ``results`` total."""
        if done:
            self._reports.setdefault(worker, deque()).append((results, done))
        self.settle(worker, reduced)

    def settle(self, worker: str, reduced: int) -> None:
        """Apply the reports of ``worker`` whose results the reducer has reduced."""
        reports = self._reports.get(worker)
        while reports and reports[0][0] <= reduced:
            _results, done = reports.popleft()
            for key, below in done.items():
                ledger = self.keys.get(key)
                if ledger is not None and ledger.holder == worker and ledger.release(below):
                    self._changed.add(key)

    def forget_reports(self, worker: str) -> None:
        """A lost worker's pending reports (its results will not all be reduced)."""
        self._reports.pop(worker, None)

    def release_entry(self) -> Release | None:
        """The releases since the last call, or None."""
        if not self._changed:
            return None
        below = {k: self.keys[k].below for k in self._changed if k in self.keys}
        self._changed.clear()
        return Release(below=below) if below else None

    def held_by(self, worker: str) -> list[str]:
        """The keys ``worker`` holds that still have unreleased deliveries."""
        return [k for k, led in self.keys.items() if led.holder == worker and led.events]

    def rebind(self, key: str, target: str) -> Rebind:
        """Move ``key``'s unreleased deliveries to ``target`` under a new key."""
        old = self.keys.pop(key)
        self._generation += 1
        new_key = f"{old.origin}~{self._generation}"
        events, counts = old.unreleased()
        moved = KeyLedger(target, old.origin)
        moved.add(events, counts)
        self.keys[new_key] = moved
        self._changed.discard(key)
        return Rebind(key=key, holder=old.holder, new_key=new_key, origin=old.origin,
                      target=target, events=events.tolist(), counts=counts.tolist())

    def drop(self, key: str) -> int:
        """Give up ``key`` (no live worker can take it); returns its unreleased deliveries."""
        old = self.keys.pop(key, None)
        self._changed.discard(key)
        return old.size if old is not None else 0

    @property
    def unreleased(self) -> int:
        return sum(led.size for led in self.keys.values())
