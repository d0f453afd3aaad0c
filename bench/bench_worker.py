"""The networked worker's data path: assembly, and ingester → worker → reducer over ZeroMQ.

Run: ``python -m pytest bench/bench_worker.py -q --benchmark-only -p no:cacheprovider``.

* ``assembly``: ``Assembler`` merging 10,000 events from two ingesters (assignment first,
  then the two partials) — the per-event Python cost of assembly.
* ``worker``: a started ``Worker`` (real Redis, real sockets, a trivial user class); a
  ROUTER plays the ingester and sends 5,000 events of one 1 KiB frame in batches of 100; a
  PULL plays the reducer and waits for every result. Baseline in the same run: a bare
  DEALER thread that decodes each batch and sends one packed result message per batch
  (no assembly, no user code, no credits).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import zmq
from pytest_benchmark.fixture import BenchmarkFixture

from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.settings import WorkerSettings
from dranspose_fast.runtime.usercode import encode_payload
from dranspose_fast.worker import Worker
from dranspose_fast.worker.parts import Assembler
from tests.conftest import RedisServer
from tests.test_worker import FakeIngester, FakeReducer, Scans, assign

EVENTS = 5000
BATCH = 100
FRAME = b"x" * 1024


class TrivialWorker:
    def process_event(self, event: Any, parameters: Any) -> Any:
        return event.event_number


def _batches(first: int) -> list[list[tuple[int, dict[str, StreamData]]]]:
    return [
        [(e, {"a": make_stream_data("STINS", [FRAME])}) for e in range(i, i + BATCH)]
        for i in range(first, first + EVENTS, BATCH)
    ]


@pytest.mark.benchmark(group="worker-assembly")
def test_assemble_10000_events_from_two_ingesters(benchmark: BenchmarkFixture) -> None:
    n = 10_000
    a = [(e, {"a": make_stream_data("STINS", [FRAME])}) for e in range(n)]
    b = [(e, {"b": make_stream_data("STINS", [FRAME])}) for e in range(n)]
    events, counts = list(range(n)), [2] * n

    def run() -> int:
        asm = Assembler()
        asm.expect(events, counts)
        asm.add([(e, dict(s)) for e, s in a])
        return len(asm.add(b))

    assert benchmark(run) == n


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server.url
    server.stop()


@pytest.mark.benchmark(group="worker-throughput")
def test_worker_5000_events_of_1kib(benchmark: BenchmarkFixture, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    ing = FakeIngester(client, "ing", ["a"])
    sink = FakeReducer(client)
    worker = Worker(WorkerSettings(
        redis_url=redis_url, worker_name="bw", worker_class="bench.bench_worker:TrivialWorker",
        build_meta_file=None, dfast_config_ttl=5.0, dfast_config_interval=0.5,
    ))
    worker.start()
    try:
        uid = Scans(client).start(["a"], [ing], ["bw"])
        state = {"next": 0}

        def setup() -> tuple[tuple[list[Any]], dict[str, Any]]:
            first = state["next"]
            state["next"] += EVENTS
            assign(client, uid, first, [[1]] * EVENTS, [[1]] * EVENTS, ["bw"])
            frames = [dataplane.encode_events(b) for b in _batches(first)]
            return (frames,), {}

        def run(frames: list[Any]) -> None:
            for f in frames:
                ing.send_raw("bw", f)
            got = 0
            while got < EVENTS:
                assert sink.pull.poll(10_000), "results stopped arriving"
                _, _, results = dataplane.decode_results(sink.pull.recv_multipart())
                got += len(results)

        benchmark.pedantic(run, setup=setup, rounds=8)
        benchmark.extra_info["events_per_s"] = EVENTS / benchmark.stats.stats.median
    finally:
        worker.close()
        ing.close()
        sink.close()
        client.close()


@pytest.mark.benchmark(group="worker-throughput")
def test_baseline_bare_dealer_relay_5000_events(benchmark: BenchmarkFixture) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    pull = ctx.socket(zmq.PULL)
    pull_port = pull.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    name = f"relay-{uuid.uuid4().hex[:6]}"

    def relay() -> None:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, name.encode())
        dealer.connect(f"tcp://127.0.0.1:{port}")
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{pull_port}")
        dealer.send(b"H")
        while not stop.is_set():
            if not dealer.poll(50):
                continue
            events = dataplane.decode_events(dealer.recv_multipart(copy=False))
            push.send_multipart(dataplane.encode_results(
                name, "h", [(e, encode_payload(e)) for e, _ in events]))
        dealer.close(linger=0)
        push.close(linger=0)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    router.recv_multipart()  # the hello
    frames = [dataplane.encode_events(b) for b in _batches(0)]

    def run() -> None:
        for f in frames:
            router.send_multipart([name.encode(), *f])
        got = 0
        while got < EVENTS:
            _, _, results = dataplane.decode_results(pull.recv_multipart())
            got += len(results)

    try:
        benchmark.pedantic(run, rounds=8)
        benchmark.extra_info["events_per_s"] = EVENTS / benchmark.stats.stats.median
    finally:
        stop.set()
        thread.join()
        router.close(linger=0)
        pull.close(linger=0)
        ctx.term()
