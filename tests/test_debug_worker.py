"""The debug worker: joins with tag ``debug``, keeps the last 50 events, serves them pickled."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator

import httpx
import pytest
import redis
import zmq

from dranspose_fast.api.server import HttpThread
from dranspose_fast.debug_worker import BUFFER_SIZE, DebugWorker, DebugWorkerSettings, create_app
from dranspose_fast.event import EventData
from dranspose_fast.runtime.redis_messages import Keys
from tests.worker_harness import FakeIngester, Scans, assign, credits, stream, wait_for


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def debug(redis_url: str) -> Iterator[tuple[DebugWorker, HttpThread]]:
    worker = DebugWorker(DebugWorkerSettings(
        redis_url=redis_url, worker_name="debugworker", build_meta_file=None,
        dfast_config_ttl=5.0, dfast_config_interval=0.2,
    ))
    worker.start()
    server = HttpThread(create_app(worker)).start()
    yield worker, server
    server.stop()
    worker.close()


def last_events(server: HttpThread, number: int | None = None) -> list[EventData]:
    params = {} if number is None else {"number": number}
    reply = httpx.get(server.url + "api/v1/last_events", params=params)
    assert reply.headers["content-type"] == "application/x.pickle"
    events: list[EventData] = pickle.loads(reply.content)
    return events


def test_joins_with_the_debug_tag_and_starts_empty(
    client: redis.Redis, debug: tuple[DebugWorker, HttpThread]
) -> None:
    _, server = debug
    raw = wait_for(lambda: client.get(Keys.config("worker", "debugworker")))
    assert json.loads(raw)["tags"] == ["debug"]
    assert httpx.get(server.url + "api/v1/status").json() is True
    assert last_events(server, 5) == []


def test_ring_buffer_serves_the_last_events_as_bytes(
    client: redis.Redis, debug: tuple[DebugWorker, HttpThread]
) -> None:
    worker, server = debug
    ing = FakeIngester(client, "ing", ["eiger", "orca"])
    try:
        uid = Scans(client).start(["eiger", "orca"], [ing], ["debugworker"])
        n = BUFFER_SIZE + 10
        assign(client, uid, 0, [[1, 1]] * n, [[1, 1]] * n, ["debugworker"])
        big = bytes(range(256)) * 300  # above the zero-copy threshold: a zmq.Frame on arrival
        for e in range(0, n, 6):
            ing.send("debugworker", [
                (i, {"eiger": stream(b"img%d" % i, big), "orca": stream(b"o%d" % i)})
                for i in range(e, e + 6)
            ])
        done = wait_for(lambda: [m for m in credits(client, uid, "debugworker")
                                 if m.processed == n])
        assert done[-1].results == 0  # no user code, no results
    finally:
        ing.close()

    two = last_events(server, 2)
    assert [e.event_number for e in two] == [n - 2, n - 1]
    for e in two:
        assert e.streams["eiger"].frames == [b"img%d" % e.event_number, big]
        assert e.streams["orca"].frames == [b"o%d" % e.event_number]
        assert all(type(f) is bytes for s in e.streams.values() for f in s.frames)
    assert any(isinstance(f, zmq.Frame) for f in worker.buffer[-1].streams["eiger"].frames)
    assert [e.event_number for e in last_events(server)] == [n - 1]
    everything = last_events(server, 1000)
    assert [e.event_number for e in everything] == list(range(n - BUFFER_SIZE, n))
