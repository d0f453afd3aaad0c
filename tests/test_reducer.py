"""The reducer service with a real Redis, real ZeroMQ and its HTTP app on a free port.

Workers are played by PUSH sockets sending result batches in the worker's format; one test
runs the real worker in front of it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import h5pyd
import httpx
import pytest
import redis
import zmq

from dranspose_fast.api.server import HttpThread
from dranspose_fast.parameters import IntParameter
from dranspose_fast.reducer import Reducer, create_app
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.curve import CurveSettings, client_keys, secure_client
from dranspose_fast.runtime.redis_messages import Keys, reduced_decoder
from dranspose_fast.runtime.settings import ReducerSettings, WorkerSettings
from dranspose_fast.runtime.usercode import encode_payload
from dranspose_fast.worker import Worker
from tests.conftest import free_port
from tests.worker_harness import FakeIngester, Scans, assign, credits, stream, wait_for

# === user classes ===


class SumReducer:
    """Sums ``payload["value"]``; counts timer calls and instances; records finish and close."""

    def __init__(self, parameters: Any, context: dict[str, Any], state: Any) -> None:
        context["instances"] = context.get("instances", 0) + 1
        self.publish: dict[str, Any] = {
            "sum": 0, "events": {}, "timer": 0, "finished": 0,
            "instance": context["instances"], "scale": parameters["scale"].value,
        }
        self.publish_rlock = threading.RLock()

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [IntParameter(name="scale", default=1)]

    def process_result(self, result: Any, parameters: Any) -> None:
        if result.payload == "boom":
            raise ValueError("cannot reduce boom")
        with self.publish_rlock:
            value = result.payload.get("value", 1) * parameters["scale"].value
            self.publish["sum"] += value
            self.publish["events"][str(result.event_number)] = value

    def timer(self, parameters: Any) -> float:
        self.publish["timer"] += 1
        return 0.02

    def finish(self, parameters: Any) -> None:
        self.publish["finished"] = 1

    def close(self, context: dict[str, Any]) -> None:
        context["closed"] = True


# === helpers ===


class FakeWorker:
    def __init__(self, url: str, name: str = "w1") -> None:
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 1000)
        secure_client(self.push, client_keys(CurveSettings()))  # the session's worker key
        self.push.connect(url)
        self.name = name

    def send(self, uid: uuid.UUID, results: list[tuple[int, Any]]) -> None:
        frames = dataplane.encode_results(
            self.name, "hash", [(evn, encode_payload(p)) for evn, p in results], uid)
        self.push.send_multipart(frames)

    def send_raw(self, frames: list[bytes]) -> None:
        self.push.send_multipart(frames)

    def close(self) -> None:
        self.push.close()
        self.ctx.term()


def reduced(client: redis.Redis, uid: uuid.UUID) -> dict[str, int]:
    entries = client.xrange(Keys.reduced(uid))
    return reduced_decoder.decode(entries[-1][1][b"d"]).reduced if entries else {}


def reducer_config(client: redis.Redis) -> dict[str, Any]:
    raw = client.get(Keys.config("reducer", "reducer"))
    return json.loads(raw) if raw else {}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def make_reducer(redis_url: str) -> Iterator[Callable[..., Reducer]]:
    made: list[Reducer] = []

    def make(cls: str | None = "tests.test_reducer:SumReducer") -> Reducer:
        settings = ReducerSettings(
            redis_url=redis_url, reducer_url=f"tcp://127.0.0.1:{free_port()}",
            reducer_class=cls, build_meta_file=None,
            dfast_config_ttl=5.0, dfast_config_interval=0.2,
        )
        reducer = Reducer(settings)
        reducer.start()
        made.append(reducer)
        return reducer

    yield make
    for reducer in made:
        reducer.close()


@pytest.fixture
def worker_for(redis_url: str) -> Iterator[Callable[[Reducer], FakeWorker]]:
    made: list[FakeWorker] = []

    def make(reducer: Reducer, name: str = "w1") -> FakeWorker:
        made.append(FakeWorker(str(reducer.state.url), name))
        return made[-1]

    yield make
    for w in made:
        w.close()


def start_scan(client: redis.Redis, scans: Scans, reducer: Reducer) -> uuid.UUID:
    uid = uuid.uuid4()
    scans.update(uid, ["a"])
    wait_for(lambda: reducer_config(client).get("mapping_uuid") == str(uid), what="scan start")
    return uid


# === tests ===


def test_results_are_reduced_served_over_http_and_totals_reported(
    client: redis.Redis, make_reducer: Callable[..., Reducer],
    worker_for: Callable[..., FakeWorker],
) -> None:
    reducer = make_reducer()
    uid = start_scan(client, Scans(client), reducer)
    w1, w2 = worker_for(reducer, "w1"), worker_for(reducer, "w2")
    w1.send(uid, [(e, {"value": e}) for e in range(10)])
    w2.send(uid, [(e, {"value": 100}) for e in range(10, 13)])
    assert wait_for(lambda: reduced(client, uid) == {"w1": 10, "w2": 3}, what="totals")

    server = HttpThread(create_app(reducer)).start()
    try:
        assert httpx.get(server.url + "api/v1/status").json() is True
        with h5pyd.File(server.url, "r") as f:
            assert f["sum"][()] == sum(range(10)) + 300
            assert f["events/12"][()] == 100
            assert f["instance"][()] == 1
    finally:
        server.stop()
    cfg = wait_for(lambda: reducer_config(client).get("results") == 13 and reducer_config(client))
    assert cfg["user_errors"] == 0 and cfg["url"] == str(reducer.state.url)


def test_reduced_entries_are_rate_limited_while_busy(
    client: redis.Redis, make_reducer: Callable[..., Reducer],
    worker_for: Callable[..., FakeWorker],
) -> None:
    reducer = make_reducer()
    uid = start_scan(client, Scans(client), reducer)
    w1 = worker_for(reducer)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 0.5:
        w1.send(uid, [(n, {"value": 1})])
        n += 1
        time.sleep(0.001)
    assert wait_for(lambda: reduced(client, uid) == {"w1": n}, what="final totals")
    entries = len(client.xrange(Keys.reduced(uid)))
    assert 2 <= entries <= 0.5 / 0.05 + 3  # one per 50 ms while busy, one when idle
    totals = [reduced_decoder.decode(f[b"d"]).reduced["w1"]
              for _, f in client.xrange(Keys.reduced(uid))]
    assert totals == sorted(totals)


def test_timer_runs_per_scan_and_finish_is_called(
    client: redis.Redis, make_reducer: Callable[..., Reducer],
    worker_for: Callable[..., FakeWorker],
) -> None:
    reducer = make_reducer()
    scans = Scans(client)
    uid = start_scan(client, scans, reducer)
    wait_for(lambda: reducer.get_data()[0]["timer"] >= 3, what="timer calls")
    first = reducer.get_data()[0]
    assert first["finished"] == 0
    scans.update(uid, ["a"], finished=True)
    wait_for(lambda: first["finished"] == 1, what="finish")
    uid2 = start_scan(client, scans, reducer)
    second = reducer.get_data()[0]
    assert second is not first and second["instance"] == 2
    wait_for(lambda: second["timer"] >= 2, what="timer of scan 2")
    stopped_at = first["timer"]
    time.sleep(0.1)
    assert first["timer"] == stopped_at  # the old scan's timer stopped
    assert uid2 != uid
    reducer.close()
    assert reducer.context["closed"] is True
    assert client.get(Keys.config("reducer", "reducer")) is None


def test_parameters_reach_the_reducer_instance(
    client: redis.Redis, make_reducer: Callable[..., Reducer],
    worker_for: Callable[..., FakeWorker],
) -> None:
    reducer = make_reducer()
    scans = Scans(client)
    uid = start_scan(client, scans, reducer)
    assert reducer.get_data()[0]["scale"] == 1
    scans.set_parameter(uid, "scale", b"3", ["a"])
    wait_for(lambda: reducer.host is not None and reducer.host.parameters["scale"].value == 3)
    worker_for(reducer).send(uid, [(0, {"value": 2})])
    assert wait_for(lambda: reducer.get_data()[0]["sum"] == 6, what="scaled sum")


def test_old_scan_results_dropped_future_held_errors_counted(
    client: redis.Redis, make_reducer: Callable[..., Reducer],
    worker_for: Callable[..., FakeWorker],
) -> None:
    reducer = make_reducer()
    scans = Scans(client)
    uid1 = start_scan(client, scans, reducer)
    w = worker_for(reducer)
    uid2 = uuid.uuid4()
    w.send(uid2, [(0, {"value": 5})])  # a worker that switched before the reducer
    w.send(uid1, [(0, {"value": 1}), (1, "boom")])
    assert wait_for(lambda: reduced(client, uid1) == {"w1": 2})
    w.send_raw([b"R", b"junk"])
    w.send_raw([b"R", b"\xc1", b"", b"", uid1.bytes])
    wait_for(lambda: reducer_config(client).get("held_results") == 1, what="held count")
    scans.update(uid2, ["a"])
    assert wait_for(lambda: reduced(client, uid2) == {"w1": 1}, what="held results reduced")
    assert reducer.get_data()[0]["sum"] == 5
    w.send(uid1, [(2, {"value": 1000})])  # the old scan's straggler
    cfg = wait_for(lambda: reducer_config(client).get("dropped_old_scan") == 1
                   and reducer_config(client))
    assert cfg["malformed_batches"] == 2
    assert cfg["user_errors"] == 1 and cfg["held_results"] == 0
    assert reducer.get_data()[0]["sum"] == 5


def test_unloadable_reducer_class_still_counts_results(
    client: redis.Redis, make_reducer: Callable[..., Reducer],
    worker_for: Callable[..., FakeWorker],
) -> None:
    reducer = make_reducer("tests.test_reducer:NoSuchReducer")
    assert "NoSuchReducer" in wait_for(lambda: reducer_config(client))["class_error"]
    uid = start_scan(client, Scans(client), reducer)
    worker_for(reducer).send(uid, [(0, {"value": 1})])
    assert wait_for(lambda: reduced(client, uid) == {"w1": 1})
    assert reducer.get_data()[0] == {}


def test_real_worker_results_reach_the_real_reducer(
    client: redis.Redis, redis_url: str, make_reducer: Callable[..., Reducer]
) -> None:
    make_reducer()
    ing = FakeIngester(client, "ing", ["a"])
    worker = Worker(WorkerSettings(
        redis_url=redis_url, worker_name="w1", worker_class="tests.test_worker:RecordingWorker",
        build_meta_file=None, dfast_config_ttl=5.0, dfast_config_interval=0.2,
    ))
    worker.start()
    try:
        uid = Scans(client).start(["a"], [ing], ["w1"])
        wait_for(lambda: reducer_config(client).get("mapping_uuid") == str(uid))
        n = 50
        assign(client, uid, 0, [[1]] * n, [[1]] * n, ["w1"])
        for e in range(0, n, 5):
            ing.send("w1", [(i, {"a": stream(b"%d" % i)}) for i in range(e, e + 5)])
        # what the controller checks before it declares the scan finished
        done = wait_for(lambda: [m for m in credits(client, uid, "w1") if m.processed == n])
        assert wait_for(lambda: reduced(client, uid) == {"w1": done[-1].results})
        assert done[-1].results == n
    finally:
        worker.close()
        ing.close()


def test_sigterm_stops_the_reducer_app_cleanly(client: redis.Redis, redis_url: str) -> None:
    http_port = free_port()
    code = (
        "from dranspose_fast.reducer import run\n"
        "from dranspose_fast.runtime.settings import ReducerSettings\n"
        f"run('127.0.0.1', {http_port}, ReducerSettings(redis_url={redis_url!r}, "
        f"reducer_url='tcp://127.0.0.1:{free_port()}', build_meta_file=None, "
        "dfast_config_interval=0.2), log_level='warning')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: reducer_config(client), what="the reducer process to register")

        def status() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{http_port}/api/v1/status").json() is True
            except httpx.TransportError:
                return False

        wait_for(status, what="the HTTP app")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert client.get(Keys.config("reducer", "reducer")) is None
