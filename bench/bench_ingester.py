"""Ingester throughput: the routing round alone, and source → ingester → worker end to end.

Run: ``python -m pytest bench/bench_ingester.py -q --benchmark-only -p no:cacheprovider``.

* ``route``: one ``dranspose_fast.ingester.routing.route`` round of 1024 rows (2 streams,
  4 workers, 8 KiB frames already received), packed and sent over inproc;
  ``extra_info["us/event"]``.
* end to end: a STINS PUSH source process → the ingester (this process, real Redis, real
  assignment batches) → a worker process (DEALER) that counts the events; beside it the same
  topology with a bare Python PULL→PUSH relay in place of the ingester, measured in the same
  run.  ``extra_info["events/s"]``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import zmq

from dranspose_fast.event import make_stream_data
from dranspose_fast.ingester.links import WorkerLinks
from dranspose_fast.ingester.routing import PendingBatch, ScanState, route
from dranspose_fast.ingester.sources import Counters
from dranspose_fast.ingesters import ZmqPullSingleIngester
from dranspose_fast.protocol import StreamName
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.curve import CurveSettings, client_keys, secure_client
from dranspose_fast.runtime.redis_messages import AssignmentBatch, ControllerUpdate, Keys
from tests.conftest import RedisServer, free_port

FRAME = 8192
EVENTS = 20000
_ctx = mp.get_context("spawn")


# === routing round ===


class _Ready:
    def __init__(self, stream: str) -> None:
        self.stream = StreamName(stream)
        self.data = make_stream_data("STINS", [b'{"htype": "image"}', bytes(FRAME)])

    def ready(self) -> bool:
        return True

    def take(self) -> Any:
        return self.data


@pytest.mark.benchmark(group="ingester-route")
def test_route_round(benchmark: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind("inproc://bench-route")
    names = [f"w{i}" for i in range(4)]
    dealers = []
    for name in names:
        d = ctx.socket(zmq.DEALER)
        d.connect("inproc://bench-route")
        d.send_multipart(dataplane.encode_hello(uuid.uuid4(), name))
        dealers.append(d)
    time.sleep(0.1)
    counters = Counters()
    log = logging.getLogger("bench")
    links = WorkerLinks(router, counters, log)
    links.receive_hellos(lambda name, service_uuid: None)
    rows = 1024
    present = np.ones((rows, 2), np.uint8)
    masks = np.array([[1 << (i % 4), 1 << ((i + 1) % 4)] for i in range(rows)], np.uint64)
    batch = AssignmentBatch(0, present, masks, names)
    sources: list[tuple[int, Any]] = [(0, _Ready("a")), (1, _Ready("b"))]

    def setup() -> tuple[tuple[ScanState], dict[str, Any]]:
        for d in dealers:
            while d.poll(0):
                d.recv_multipart()
        scan = ScanState(uuid.uuid4(), [StreamName("a"), StreamName("b")], sources)
        scan.pending.append(PendingBatch(batch, [0, 1]))
        return (scan,), {}

    def run(scan: ScanState) -> int:
        return route(scan, links, counters, log, max_rows=rows)

    result = benchmark.pedantic(run, setup=setup, rounds=30, iterations=1)
    assert result == rows
    benchmark.extra_info["us/event"] = benchmark.stats.stats.median / rows * 1e6
    for d in dealers:
        d.close(linger=0)
    router.close(linger=0)
    ctx.term()


# === end to end ===


def _source(port: int, n: int, go: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 100000)
    sock.bind(f"tcp://127.0.0.1:{port}")
    payload = bytes(FRAME)
    go.wait()
    sock.send_multipart([json.dumps({"htype": "header", "msg_number": 0}).encode()])
    for i in range(n):
        head = json.dumps({"htype": "image", "msg_number": i + 1, "frame": i, "shape": [FRAME],
                           "type": "uint8", "compression": "none"}).encode()
        sock.send_multipart([head, payload], copy=False)
    sock.send_multipart([json.dumps({"htype": "series_end", "msg_number": n + 1}).encode()])
    sock.close(linger=10000)
    ctx.term()


def _sink(url: str, n: int, packed: bool, ready: Any, out: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    if packed:
        sock = ctx.socket(zmq.DEALER)
        secure_client(sock, client_keys(CurveSettings()))
        sock.connect(url)
        sock.send_multipart(dataplane.encode_hello(uuid.uuid4(), "w0"))
    else:
        sock = ctx.socket(zmq.PULL)
        sock.connect(url)
    ready.set()
    got = 0
    while got < n:
        frames = sock.recv_multipart(copy=False)
        # packed: count entries in the batch index (uint32 at byte 8); relay: one per message
        got += struct.unpack_from("<I", frames[2].buffer, 8)[0] if packed else 1
    out.put(time.perf_counter())
    sock.close(linger=0)
    ctx.term()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def _relay(pull_port: int, push_port: int, n: int, stop: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(f"tcp://127.0.0.1:{pull_port}")
    push = ctx.socket(zmq.PUSH)
    push.bind(f"tcp://127.0.0.1:{push_port}")
    for _ in range(n):
        push.send_multipart(pull.recv_multipart(copy=False), copy=False)
    push.close(linger=10000)
    pull.close(linger=0)
    ctx.term()


def _end_to_end(benchmark: Any, start: Any) -> None:
    """``start()`` → (sink url, packed, cleanup); times go → last event at the sink."""
    times: list[float] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        go, ready, out = _ctx.Event(), _ctx.Event(), _ctx.Queue()
        port = free_port()
        src = _ctx.Process(target=_source, args=(port, EVENTS, go))
        src.start()
        url, packed, cleanup = start(port)
        sink = _ctx.Process(target=_sink, args=(url, EVENTS + 2, packed, ready, out))
        sink.start()
        ready.wait(30)
        time.sleep(0.3)  # let connections settle
        return (go, out, src, sink, cleanup), {}

    def run(go: Any, out: Any, src: Any, sink: Any, cleanup: Any) -> None:
        t0 = time.perf_counter()
        go.set()
        t1 = out.get(timeout=120)
        times.append(t1 - t0)
        src.join(30)
        sink.join(30)
        cleanup()

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["events/s"] = EVENTS / sorted(times)[len(times) // 2]
    benchmark.extra_info["MB/s"] = benchmark.extra_info["events/s"] * FRAME / 1e6


@pytest.mark.benchmark(group="ingester-e2e")
def test_e2e_ingester(benchmark: Any, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)

    def start(port: int) -> tuple[str, bool, Any]:
        ing = ZmqPullSingleIngester(ZmqPullSingleIngester.settings_class(
            ingester_streams=["eiger"], redis_url=redis_url, build_meta_file=None,
            ingester_url=f"tcp://127.0.0.1:{free_port()}",
            upstream_url=f"tcp://127.0.0.1:{port}", dfast_config_interval=0.5))
        ing.start()
        uid = uuid.uuid4()
        upd = ControllerUpdate(mapping_uuid=uid, streams=[StreamName("eiger")])
        r.xadd(Keys.UPDATES, {"d": upd.model_dump_json()})
        n = EVENTS + 2
        for first in range(0, n, 4096):  # assignment batches as the controller emits them
            count = min(4096, n - first)
            batch = AssignmentBatch(first, np.ones((count, 1), np.uint8),
                                    np.ones((count, 1), np.uint64), ["w0"])
            r.xadd(Keys.assigned(uid), batch.encode())  # type: ignore[arg-type]
        return str(ing.state.url), True, ing.close

    _end_to_end(benchmark, start)
    r.close()


@pytest.mark.benchmark(group="ingester-e2e")
def test_e2e_python_relay_baseline(benchmark: Any) -> None:
    def start(port: int) -> tuple[str, bool, Any]:
        out_port = free_port()
        relay = _ctx.Process(target=_relay, args=(port, out_port, EVENTS + 2, None))
        relay.start()
        return f"tcp://127.0.0.1:{out_port}", False, lambda: relay.join(30)

    _end_to_end(benchmark, start)
