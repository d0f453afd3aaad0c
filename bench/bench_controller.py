"""The controller's binding path: bookkeeping per batch, and the credit loop through Redis.

Run: ``python -m pytest bench/bench_controller.py -q --benchmark-only -p no:cacheprovider``.

* ``record``: ``BindingEngine.bind`` + ``ScanState.record`` (deliveries per worker, encoding) of
  65,536 events for 8 workers: the controller's cost per batch, without Redis.
* ``credit loop``: a real redis-server and a started ``Controller``; simulated workers (one
  thread) read every assignment batch and grant its events straight back with
  ``credit_window = 256`` each, as fast as Redis allows: the controller's ceiling in events/s
  when workers are infinitely fast. Compare with dranspose 0.2's ~2,700 Redis round trips/s
  (it assigns every event in a round trip of its own).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from pytest_benchmark.fixture import BenchmarkFixture

from dranspose_fast.controller import Controller, ControllerSettings
from dranspose_fast.controller.scan import ScanState
from dranspose_fast.mapping import MappingSequence
from dranspose_fast.protocol import IngesterState, ReducerState, WorkerState
from dranspose_fast.runtime.redis_messages import (
    AssignmentBatch,
    ControllerUpdate,
    CreditMessage,
    Keys,
    credit_encoder,
)
from tests.conftest import RedisServer

WORKERS = 8
BATCH = 65536


@pytest.mark.benchmark(group="controller-record")
def test_bind_and_record_65536_events(benchmark: BenchmarkFixture) -> None:
    seq = MappingSequence.from_uniform(["a", "b"], 10 * BATCH)

    def setup() -> tuple[tuple[ScanState], dict[str, object]]:
        scan = ScanState(uuid.uuid4(), seq)
        for w in range(WORKERS):
            scan.add_worker(f"w{w}", ["generic"])
            scan.engine.grant(f"w{w}", BATCH)
        return (scan,), {}

    def run(scan: ScanState) -> int:
        batch = scan.engine.bind(BATCH)
        scan.record(batch)
        return batch.count

    count = benchmark.pedantic(run, setup=setup, rounds=10)
    assert count == BATCH


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    srv.start()
    yield srv
    srv.stop()


def _publish(r: redis.Redis, uid: uuid.UUID | None, workers: int) -> None:
    ing = IngesterState(name="ing", url="tcp://localhost:9000", streams=["a"], mapping_uuid=uid)
    states: list[tuple[str, object]] = [("ingester", ing)]
    states += [("worker", WorkerState(name=f"w{i}", ingesters=[ing], mapping_uuid=uid))
               for i in range(workers)]
    states.append(("reducer", ReducerState(url="tcp://localhost:9999", mapping_uuid=uid)))
    for role, st in states:
        r.set(Keys.config(role, st.name), st.model_dump_json(), px=20000)  # type: ignore[attr-defined]


def _workers(r: redis.Redis, uid: uuid.UUID, total: int, window: int) -> None:
    """All workers in one thread: every batch's events are processed and granted back."""
    processed: dict[str, int] = {}
    for i in range(WORKERS // 2):
        r.xadd(Keys.credits(uid), {"d": credit_encoder.encode(
            CreditMessage(worker=f"w{i}", granted=window, processed=0, results=0))})
    last = b"0-0"
    seen = 0
    while seen < total:
        for _key, items in r.xread({Keys.assigned(uid): last}, block=1000) or []:
            for entry_id, fields in items:
                last = entry_id
                if b"b" not in fields:
                    continue  # a control entry (Joined, Release)
                b = AssignmentBatch.decode(fields)
                seen += b.count
                rows = np.bitwise_or.reduce(b.masks, axis=1)
                pipe = r.pipeline(transaction=False)
                for slot, name in enumerate(b.workers):
                    n = int(np.count_nonzero(rows & np.uint64(1 << slot)))
                    if name and n:
                        processed[name] = processed.get(name, 0) + n
                        pipe.xadd(Keys.credits(uid), {"d": credit_encoder.encode(CreditMessage(
                            worker=name, granted=n, processed=processed[name], results=0))})
                pipe.execute()


@pytest.mark.benchmark(group="controller-credit-loop")
def test_credit_loop_through_redis(benchmark: BenchmarkFixture, server: RedisServer) -> None:
    r = redis.Redis.from_url(server.url)
    settings = ControllerSettings.model_validate(
        {"redis_url": server.url, "build_meta_file": None, "dfast_lock_ttl": 5})
    ctrl = Controller(settings)
    ctrl.start()
    n = 200_000
    rates = []

    def follow() -> None:
        while not stop.is_set():
            latest = r.xrevrange(Keys.UPDATES, count=1)
            uid = ControllerUpdate.model_validate_json(latest[0][1][b"d"]).mapping_uuid \
                if latest else None
            _publish(r, uid, WORKERS // 2)
            stop.wait(0.02)

    stop = threading.Event()
    _publish(r, None, WORKERS // 2)
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()

    def scan() -> None:
        uid = ctrl.set_sequence(MappingSequence.from_uniform(["a"], n))
        t0 = time.perf_counter()
        _workers(r, uid, n + 2, 256)
        rates.append((n + 2) / (time.perf_counter() - t0))

    try:
        benchmark.pedantic(scan, rounds=3)
    finally:
        stop.set()
        follower.join(5)
        ctrl.close()
    print(f"\ncredit loop: {min(rates):,.0f} .. {max(rates):,.0f} events/s "
          f"({WORKERS // 2} workers, window 256)")
