"""Ingesters, workers and a reducer simulated *through Redis itself* (their config keys, credit
and reduced entries, reads of the assigned stream), and the controller fixtures built on them:
shared by tests/test_controller.py and tests/test_controller_api.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from dranspose_fast.controller import (
    Controller,
    ControllerSettings,
)
from dranspose_fast.protocol import ConnectedWorker, IngesterState, ReducerState, WorkerState
from dranspose_fast.runtime.redis_messages import (
    AssignmentBatch,
    ControllerUpdate,
    CreditMessage,
    Keys,
    ReducedMessage,
    credit_encoder,
)


def settings_for(url: str, **extra: Any) -> ControllerSettings:
    values: dict[str, Any] = {
        "redis_url": url, "build_meta_file": None, "dfast_config_ttl": 2.0,
        "dfast_config_interval": 0.2, "dfast_lock_ttl": 2.0, "dfast_lock_retry": 0.1,
        "dfast_lock_timeout": 0.5, "dfast_mapping_timeout": 3.0, "dfast_config_cache": 0.05,
        "dfast_defaults_interval": 0.2, "dfast_check_interval": 0.1, "dfast_block_ms": 50,
    }
    values.update(extra)
    return ControllerSettings(**values)


class Sim:
    """Ingesters, workers and a reducer as Redis sees them (configs, credits, reduced)."""

    def __init__(self, url: str, ttl: float = 2.0) -> None:
        self.r = redis.Redis.from_url(url)
        self.ttl = ttl
        self.ingesters: dict[str, IngesterState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.reducer: ReducerState | None = None
        self.frozen: set[str] = set()  # components that do not follow updates
        self.dead: set[str] = set()  # components that stopped publishing
        self.extra: dict[str, dict[str, Any]] = {}  # extra fields (counters) per component
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def add_ingester(self, name: str, streams: list[str]) -> None:
        url = f"tcp://localhost:{len(self.ingesters) + 9000}"
        self.ingesters[name] = IngesterState(name=name, url=url, streams=streams)

    def add_worker(self, name: str, tags: set[str] | None = None,
                   ingesters: list[str] | None = None) -> None:
        ings = [self.ingesters[i] for i in (ingesters or list(self.ingesters))]
        state = WorkerState(name=name, ingesters=ings, tags=tags or {"generic"})
        for ing in ings:  # the ingester heard the worker's hello
            ing.connected_workers[state.service_uuid] = ConnectedWorker(
                name=name, service_uuid=state.service_uuid)
        self.workers[name] = state

    def add_reducer(self) -> None:
        self.reducer = ReducerState(url="tcp://localhost:9999")

    def kill(self, name: str) -> None:
        self.dead.add(name)
        self.r.delete(Keys.config("worker", name))

    def start(self) -> Sim:
        self.publish()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.r.close()

    def states(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [("ingester", s) for s in self.ingesters.values()]
        out += [("worker", s) for s in self.workers.values()]
        if self.reducer is not None:
            out.append(("reducer", self.reducer))
        return [(role, s) for role, s in out if s.name not in self.dead]

    def publish(self) -> None:
        for role, state in self.states():
            body = state.model_dump(mode="json") | self.extra.get(state.name, {})
            self.r.set(Keys.config(role, state.name), json.dumps(body),
                       px=int(self.ttl * 1000))

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                latest = self.r.xrevrange(Keys.UPDATES, count=1)
                if latest:
                    update = ControllerUpdate.model_validate_json(latest[0][1][b"d"])
                    for _role, state in self.states():
                        if state.name not in self.frozen:
                            state.mapping_uuid = update.mapping_uuid
                self.publish()
            except redis.RedisError:
                pass

    # === messages of the data path ===

    def credit(self, uid: object, worker: str, granted: int, processed: int = 0,
               results: int = 0) -> None:
        msg = CreditMessage(worker=worker, granted=granted, processed=processed, results=results)
        self.r.xadd(Keys.credits(uid), {"d": credit_encoder.encode(msg)})

    def reduce(self, uid: object, totals: dict[str, int]) -> None:
        msg = ReducedMessage(reduced=totals)
        self.r.xadd(Keys.reduced(uid), {"d": credit_encoder.encode(msg)})

    def batches(self, uid: object) -> list[AssignmentBatch]:
        """The assignment batches of the scan (its control entries left out)."""
        return [AssignmentBatch.decode(f) for _i, f in self.r.xrange(Keys.assigned(uid))
                if b"b" in f]

    def updates(self) -> list[ControllerUpdate]:
        return [ControllerUpdate.model_validate_json(f[b"d"])
                for _i, f in self.r.xrange(Keys.UPDATES)]

    def events(self, uid: object, streams: list[str]) -> dict[int, dict[str, set[str] | None]]:
        """Event → stream → receiving workers (None: no frame), checking batch contiguity."""
        out: dict[int, dict[str, set[str] | None]] = {}
        expect = 0
        for b in self.batches(uid):
            assert b.first_event == expect, "batches must be contiguous and in order"
            for row in range(b.count):
                out[b.first_event + row] = {
                    s: set(b.workers_of(row, j)) if b.present[row, j] else None
                    for j, s in enumerate(streams)}
            expect = b.first_event + b.count
        return out

    def delivery_counts(self, uid: object) -> dict[str, int]:
        """Events per worker, counted with numpy over the batches (big scans)."""
        out: dict[str, int] = {}
        for b in self.batches(uid):
            rows = np.bitwise_or.reduce(b.masks, axis=1)
            for slot, name in enumerate(b.workers):
                n = int(np.count_nonzero(rows & np.uint64(1 << slot)))
                if name and n:
                    out[name] = out.get(name, 0) + n
        return out

    def received(self, uid: object, streams: list[str]) -> dict[str, list[int]]:
        per: dict[str, list[int]] = {}
        for evn, cells in sorted(self.events(uid, streams).items()):
            who: set[str] = set()
            for ws in cells.values():
                who |= ws or set()
            for w in who:
                per.setdefault(w, []).append(evn)
        return per


@pytest.fixture
def settings(redis_url: str) -> ControllerSettings:
    return settings_for(redis_url)


@pytest.fixture
def ctrl(settings: ControllerSettings) -> Iterator[Controller]:
    c = Controller(settings)
    c.start()
    try:
        yield c
    finally:
        c.close()


def started_sim(url: str, ingester: str, streams: list[str]) -> Sim:
    """An ingester owning ``streams``, workers w0 and w1 and a reducer, publishing."""
    s = Sim(url)
    s.add_ingester(ingester, streams)
    s.add_worker("w0")
    s.add_worker("w1")
    s.add_reducer()
    return s.start()


def drive(sim: Sim, uid: object, streams: list[str], total: int,
          workers: tuple[str, ...] = ("w0", "w1"), timeout: float = 10.0) -> None:
    """Workers process what they got and grant it back until ``total`` events are emitted."""
    done = dict.fromkeys(workers, 0)
    deadline = time.monotonic() + timeout
    while len(sim.events(uid, streams)) < total:
        assert time.monotonic() < deadline, "scan did not progress"
        got = sim.received(uid, streams)
        for w in done:
            n = len(got.get(w, []))
            if n > done[w]:
                sim.credit(uid, w, n - done[w], processed=n)
                done[w] = n
        time.sleep(0.02)


def finish_all(sim: Sim, ctrl: Controller, uid: object, streams: list[str],
               results: bool = True) -> dict[str, list[int]]:
    """Every worker reports all it got as processed (with a result each), then the reducer."""
    got = sim.received(uid, streams)
    for w, evs in got.items():
        sim.credit(uid, w, 0, processed=len(evs), results=len(evs) if results else 0)
    if results:
        sim.reduce(uid, {w: len(evs) for w, evs in got.items()})
    return got
