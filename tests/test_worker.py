"""The networked worker against a real Redis and real ZeroMQ sockets.

The tests play the controller (XADD updates and assignment batches), the ingesters (a ROUTER
on a free port with its config key) and the reducer (a PULL with the reducer's config key).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast.event import EventData
from dranspose_fast.parameters import StrParameter
from dranspose_fast.runtime.redis_messages import (
    AssignmentBatch,
    CreditMessage,
    Keys,
)
from dranspose_fast.runtime.settings import WorkerSettings
from dranspose_fast.runtime.tick import RedisTickClock
from dranspose_fast.worker import Worker
from dranspose_fast.worker.parts import Assembler, events_for
from tests.conftest import wait_for
from tests.worker_harness import (
    FakeIngester,
    FakeReducer,
    Scans,
    assign,
    config,
    credits,
    stream,
)

# === user classes (loaded by name, as a deployment would) ===


class RecordingWorker:
    """Returns what it saw; counts its instances in ``context``; records finish and close."""

    def __init__(self, parameters: Any, context: dict[str, Any], state: Any) -> None:
        context["instances"] = context.get("instances", 0) + 1
        self.instance = context["instances"]
        self.name = state.name

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [StrParameter(name="roi", default="full")]

    def process_event(self, event: Any, parameters: Any, tick: bool) -> Any:
        if event.event_number == 666:
            raise RuntimeError("the beast")
        return {
            "evn": event.event_number,
            "streams": {n: [bytes(f) for f in s.frames] for n, s in event.streams.items()},
            "instance": self.instance,
            "worker": self.name,
            "roi": parameters["roi"].value,
        }

    def close(self, context: dict[str, Any]) -> None:
        context["closed"] = self.instance


class FinishingWorker(RecordingWorker):
    def __init__(self, parameters: Any, context: dict[str, Any], state: Any) -> None:
        super().__init__(parameters, context, state)
        self.context = context

    def finish(self, parameters: Any) -> None:
        self.context.setdefault("finished", []).append(self.instance)


class TickWorker:
    def get_tick_interval(self, parameters: Any) -> float:
        return 60.0

    def process_event(self, event: Any, parameters: Any, tick: bool) -> Any:
        return {"evn": event.event_number, "tick": tick}


# === the stand-ins for the other components ===


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def make_worker(redis_url: str) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(name: str = "w1", cls: str | None = "tests.test_worker:RecordingWorker",
             **kw: Any) -> Worker:
        settings = WorkerSettings(
            redis_url=redis_url, worker_name=name, worker_class=cls, build_meta_file=None,
            dfast_config_ttl=5.0, dfast_config_interval=0.2, **kw,
        )
        worker = Worker(settings)
        worker.start()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()


@pytest.fixture
def peers(client: redis.Redis) -> Iterator[dict[str, Any]]:
    made: dict[str, Any] = {"ingesters": []}

    def ingester(name: str, streams: list[str]) -> FakeIngester:
        ing = FakeIngester(client, name, streams)
        made["ingesters"].append(ing)
        return ing

    made["ingester"] = ingester
    made["reducer"] = FakeReducer(client)
    made["scans"] = Scans(client)
    yield made
    for ing in made["ingesters"]:
        ing.close()
    made["reducer"].close()


# === pure parts ===


def test_assembler_waits_for_every_stream_whichever_comes_first() -> None:
    asm = Assembler()
    assert asm.add([(1, {"a": stream(b"a1")})]) == []  # data before its assignment
    assert asm.expect([0, 1], [1, 2]) == []
    done = asm.add([(0, {"a": stream(b"a0")}), (1, {"b": stream(b"b1")})])
    assert [(e.event_number, sorted(e.streams)) for e in done] == [(0, ["a"]), (1, ["a", "b"])]
    assert all(isinstance(e, EventData) for e in done)
    assert asm.add([(2, {"a": stream(b"a2")}), (2, {"a": stream(b"again")})]) == []
    assert asm.duplicates == 1
    assert [e.event_number for e in asm.expect([2], [1])] == [2]
    assert asm.waiting == 0


@settings(deadline=None, max_examples=60)
@given(st.lists(st.sets(st.sampled_from("abc"), min_size=1), min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_assembler_completes_each_event_once_in_any_arrival_order(
    layout: list[set[str]], rnd: Any
) -> None:
    # Each stream is one ingester: its partials arrive in event order, interleaved at random
    # with the other ingesters and with the assignment rows.
    queues: list[list[tuple[str, Any]]] = [
        [("data", (evn, {s: stream(f"{s}{evn}".encode())})) for evn, streams in
         enumerate(layout) if s in streams] for s in "abc"
    ]
    queues.append([("assign", (evn, len(streams))) for evn, streams in enumerate(layout)])
    asm = Assembler()
    done: list[EventData] = []
    while any(queues):
        q = rnd.choice([q for q in queues if q])
        kind, item = q.pop(0)
        done += asm.add([item]) if kind == "data" else asm.expect([item[0]], [item[1]])
    assert sorted(e.event_number for e in done) == list(range(len(layout)))
    for e in done:
        evn, streams = e.event_number, e.streams
        assert set(streams) == layout[evn]
        assert all(streams[s].frames == [f"{s}{evn}".encode()] for s in streams)
    assert asm.waiting == 0


def test_events_for_picks_this_workers_bit_on_present_streams() -> None:
    present = np.array([[1, 1], [1, 0], [0, 0], [1, 1]], np.uint8)
    masks = np.array([[0b01, 0b10], [0b11, 0b11], [0b11, 0b11], [0b10, 0b10]], np.uint64)
    batch = AssignmentBatch(7, present, masks, ["w0", "w1"])
    assert events_for(batch, "w0") == ([7, 8], [1, 1])
    assert events_for(batch, "w1") == ([7, 8, 10], [1, 1, 2])
    assert events_for(batch, "nobody") == ([], [])


def test_redis_tick_clock_one_winner_per_interval(client: redis.Redis) -> None:
    a = RedisTickClock(client, "dfast:clock:test")
    b = RedisTickClock(client, "dfast:clock:test")
    assert a.claim(0.3) is True
    assert [b.claim(0.3), a.claim(0.3), b.claim(0.3)] == [False, False, False]
    time.sleep(0.35)
    assert b.claim(0.3) is True
    assert a.claim(0.3) is False


# === the running worker ===


def test_assembles_partials_from_two_ingesters_and_sends_results(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    ing_a = peers["ingester"]("ing-a", ["a"])
    ing_b = peers["ingester"]("ing-b", ["b"])
    make_worker("w1", dfast_credit_window=8)
    uid = peers["scans"].start(["a", "b"], [ing_a, ing_b], ["w1"])
    assert credits(client, uid, "w1")[0] == CreditMessage("w1", 8, 0, 0, 0)
    cfg = config(client, "w1")
    assert sorted(i["name"] for i in cfg["ingesters"]) == ["ing-a", "ing-b"]

    # b's partials and half of a's arrive before the assignment, the rest after it
    ing_b.send("w1", [(e, {"b": stream(b"B%d" % e)}) for e in (0, 2, 4)])
    ing_a.send("w1", [(e, {"a": stream(b"A%d" % e, b"x")}) for e in (0, 1)])
    time.sleep(0.1)
    present = [[1, e % 2 == 0] for e in range(6)]
    assign(client, uid, 0, present, [[1, 1]] * 6, ["w1"])
    ing_a.send("w1", [(e, {"a": stream(b"A%d" % e, b"x")}) for e in (2, 3, 4, 5)])

    got = {evn: payload for _, _, evn, payload in peers["reducer"].collect(6)}
    for e in range(6):
        expected = {"a": [b"A%d" % e, b"x"]}
        if e % 2 == 0:
            expected["b"] = [b"B%d" % e]
        assert got[e]["streams"] == expected
        assert got[e]["roi"] == "full"  # the described default
    last = wait_for(lambda: [m for m in credits(client, uid, "w1") if m.processed == 6])[-1]
    assert last.results == 6
    assert sum(m.granted for m in credits(client, uid, "w1")) == 8 + 6
    assert wait_for(lambda: config(client, "w1")["processed_events"] == 6)


def test_credits_are_batched_with_running_totals_and_errors(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    ing = peers["ingester"]("ing", ["a"])
    make_worker("w1", dfast_credit_window=40)
    uid = peers["scans"].start(["a"], [ing], ["w1"])
    n = 200
    assign(client, uid, 0, [[1]] * n, [[1]] * n, ["w1"])
    events = [(e if e != 50 else 666, {"a": stream(b"%d" % e)}) for e in range(n)]
    assign(client, uid, 666, [[1]], [[1]], ["w1"])
    for i in range(0, n, 20):
        ing.send("w1", events[i:i + 20])
    peers["reducer"].collect(n - 1)
    msgs = wait_for(lambda: [m for m in credits(client, uid, "w1") if m.processed == n]
                    and credits(client, uid, "w1"))
    processed = [m.processed for m in msgs]
    assert processed == sorted(processed)
    assert msgs[-1].results == n - 1 and msgs[-1].errors == 1
    assert sum(m.granted for m in msgs[1:]) == n
    # batched: far fewer messages than events (one per window/4 = 10 events at most)
    assert len(msgs) <= 1 + n // 10 + 2
    assert wait_for(lambda: config(client, "w1")["user_errors"] == 1)


def test_tick_is_exclusive_across_two_workers(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    ing = peers["ingester"]("ing", ["a"])
    make_worker("w1", cls="tests.test_worker:TickWorker")
    make_worker("w2", cls="tests.test_worker:TickWorker")
    uid = peers["scans"].start(["a"], [ing], ["w1", "w2"])
    n = 30
    assign(client, uid, 0, [[1]] * n, [[1 << (e % 2)] for e in range(n)], ["w1", "w2"])
    for e in range(n):
        ing.send(f"w{e % 2 + 1}", [(e, {"a": stream(b"f")})])
    results = peers["reducer"].collect(n)
    assert sorted(evn for _, _, evn, _ in results) == list(range(n))
    assert sum(p["tick"] for _, _, _, p in results) == 1
    assert client.pttl(Keys.clock(uid)) > 50_000


def test_reducer_starting_late_gets_every_result(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    client.delete(Keys.config("reducer", "reducer"))
    peers["reducer"].close()
    ing = peers["ingester"]("ing", ["a"])
    make_worker("w1")
    uid = peers["scans"].start(["a"], [ing], ["w1"])
    assign(client, uid, 0, [[1]] * 10, [[1]] * 10, ["w1"])
    ing.send("w1", [(e, {"a": stream(b"%d" % e)}) for e in range(10)])
    wait_for(lambda: config(client, "w1").get("results_queued") == 1, what="queued results")
    late = peers["reducer"] = FakeReducer(client)
    results = late.collect(10)
    assert sorted(evn for _, _, evn, _ in results) == list(range(10))
    assert {mapping for mapping, _, _, _ in results} == {uid}


def test_new_mapping_reinstantiates_keeps_context_drops_old_frames_and_finishes(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    ing = peers["ingester"]("ing", ["a"])
    worker = make_worker("w1", cls="tests.test_worker:FinishingWorker")
    scans: Scans = peers["scans"]
    uid1 = scans.start(["a"], [ing], ["w1"])
    assign(client, uid1, 0, [[1]] * 3, [[1]] * 3, ["w1"])
    ing.send("w1", [(e, {"a": stream(b"one")}) for e in range(3)])
    first = peers["reducer"].collect(3)
    assert {p["instance"] for _, _, _, p in first} == {1}
    scans.update(uid1, ["a"], finished=True)
    wait_for(lambda: worker.context.get("finished") == [1], what="finish of scan 1")

    # scan 2: the ingester lags behind; what it still sends belongs to scan 1 and is dropped
    uid2 = uuid.uuid4()
    scans.update(uid2, ["a"])
    wait_for(lambda: config(client, "w1").get("mapping_uuid") == str(uid2))
    ing.send("w1", [(7, {"a": stream(b"stale")})])
    wait_for(lambda: config(client, "w1")["dropped_old_scan"] >= 1, what="old-scan drop count")
    assert credits(client, uid2, "w1") == []  # no credit before the ingester switched
    ing.publish(uid2)
    wait_for(lambda: credits(client, uid2, "w1"), what="credits of scan 2")
    scans.join(uid2, ["w1"])
    assign(client, uid2, 0, [[1]] * 2, [[1]] * 2, ["w1"])
    ing.send("w1", [(e, {"a": stream(b"two")}) for e in range(2)])
    second = peers["reducer"].collect(2)
    assert {(m, p["instance"], p["streams"]["a"][0]) for m, _, _, p in second} == {
        (uid2, 2, b"two")}
    assert worker.context["instances"] == 2 and worker.context["finished"] == [1]
    scans.update(uid2, ["a"], finished=True)
    wait_for(lambda: worker.context.get("finished") == [1, 2], what="finish of scan 2")
    worker.close()
    assert worker.context["closed"] == 2
    assert client.get(Keys.config("worker", "w1")) is None


def test_parameter_change_reaches_the_running_instance(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    ing = peers["ingester"]("ing", ["a"])
    make_worker("w1")
    scans: Scans = peers["scans"]
    uid = scans.start(["a"], [ing], ["w1"])
    assign(client, uid, 0, [[1]] * 2, [[1]] * 2, ["w1"])
    ing.send("w1", [(0, {"a": stream(b"x")})])
    assert peers["reducer"].collect(1)[0][3]["roi"] == "full"
    before = config(client, "w1")["parameters_hash"]
    scans.set_parameter(uid, "roi", b"10:20", ["a"])
    wait_for(lambda: config(client, "w1")["parameters_hash"] != before, what="new hash")
    ing.send("w1", [(1, {"a": stream(b"x")})])
    assert peers["reducer"].collect(1)[0][3]["roi"] == "10:20"


def test_malformed_batch_is_counted_and_the_worker_goes_on(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    ing = peers["ingester"]("ing", ["a"])
    make_worker("w1")
    uid = peers["scans"].start(["a"], [ing], ["w1"])
    assign(client, uid, 0, [[1]], [[1]], ["w1"])
    ing.send_raw("w1", [b"E", b"\xc1not msgpack", b"", b""])
    ing.send_raw("w1", [b"E"])
    ing.send("w1", [(0, {"a": stream(b"ok")})])
    assert peers["reducer"].collect(1)[0][2] == 0
    assert wait_for(lambda: config(client, "w1")["malformed_batches"] == 2)


def test_unloadable_class_is_counted_and_takes_no_events(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    ing = peers["ingester"]("ing", ["a"])
    make_worker("w1", cls="tests.no_such_module:Nothing")
    make_worker("w2")
    cfg = wait_for(lambda: config(client, "w1"))
    assert cfg["class_errors"] == 1 and "no_such_module" in cfg["class_error"]
    # w2 grants its window as soon as it has the scan (start waits for that); w1, whose
    # class did not load, never does, so the controller binds no event to it
    uid = peers["scans"].start(["a"], [ing], ["w2"])
    wait_for(lambda: config(client, "w1")["mapping_uuid"] == str(uid), what="w1 in the scan")
    time.sleep(0.5)  # w1 had the same chance as w2, and then some
    assert credits(client, uid, "w1") == []
    assert config(client, "w1")["class_error"]


def test_reconnects_when_an_ingester_restarts(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    old = peers["ingester"]("ing", ["a"])
    make_worker("w1")
    old.wait_worker("w1")
    new = peers["ingester"]("ing", ["a"])  # same name, new port and service_uuid
    new.wait_worker("w1")
    assert wait_for(lambda: config(client, "w1")["ingester_reconnects"] == 1)
    uid = peers["scans"].start(["a"], [new], ["w1"])
    assign(client, uid, 0, [[1]], [[1]], ["w1"])
    new.send("w1", [(0, {"a": stream(b"via new")})])
    assert peers["reducer"].collect(1)[0][3]["streams"] == {"a": [b"via new"]}


def test_worker_without_class_joins_and_completes(
    client: redis.Redis, make_worker: Callable[..., Worker], peers: dict[str, Any]
) -> None:
    ing = peers["ingester"]("ing", ["a"])
    make_worker("w1", cls=None, worker_tags=["generic", "fast"])
    assert set(wait_for(lambda: config(client, "w1"))["tags"]) == {"generic", "fast"}
    uid = peers["scans"].start(["a"], [ing], ["w1"])
    assign(client, uid, 0, [[1]] * 3, [[1]] * 3, ["w1"])
    ing.send("w1", [(e, {"a": stream(b"f")}) for e in range(3)])
    assert wait_for(lambda: [m for m in credits(client, uid, "w1") if m.processed == 3])
    assert config(client, "w1")["class_errors"] == 0


def test_redis_restart_ends_the_scan_and_the_worker_comes_back(
    client: redis.Redis, redis_server: Any, make_worker: Callable[..., Worker],
    peers: dict[str, Any],
) -> None:
    ing = peers["ingester"]("ing", ["a"])
    worker = make_worker("w1", cls="tests.test_worker:FinishingWorker")
    peers["scans"].start(["a"], [ing], ["w1"])
    redis_server.restart()
    wait_for(lambda: worker.context.get("finished") == [1], what="the scan to end")
    fresh = redis.Redis.from_url(redis_server.url)
    try:
        assert wait_for(lambda: config(fresh, "w1").get("name") == "w1", what="config back")
    finally:
        fresh.close()


def test_sigterm_stops_a_worker_process_cleanly(client: redis.Redis, redis_url: str) -> None:
    code = (
        "from dranspose_fast.runtime.settings import WorkerSettings\n"
        "from dranspose_fast.worker import Worker\n"
        f"Worker(WorkerSettings(redis_url={redis_url!r}, worker_name='wp', "
        "build_meta_file=None, dfast_config_interval=0.2)).run()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: config(client, "wp"), what="the worker process to register")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert client.get(Keys.config("worker", "wp")) is None
