"""The ingester with real Redis, real ZeroMQ sockets and a real STINS upstream.

The tests play the controller (an update in ``dfast:updates``, assignment batches in
``dfast:assigned:{uuid}``) and the workers (DEALER sockets that say hello), so every check is
on what actually crosses the sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import zmq

from dranspose_fast.dataplane import decode_events
from dranspose_fast.event import StreamData
from dranspose_fast.ingester import Ingester, IngesterSettings, IsSoftwareTriggered
from dranspose_fast.ingesters import (
    MultipartIngester,
    ZmqPullSingleIngester,
    create_ingester,
    ingester_class,
)
from dranspose_fast.protocol import IngesterState, StreamName
from dranspose_fast.protocol_redis import AssignmentBatch, ControllerUpdate, Keys
from tests.conftest import free_port
from tests.stins_source import StinsSource

TIMEOUT = 10.0


def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def as_bytes(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)


class Worker:
    """A DEALER that says hello like a worker and collects the partial events it gets."""

    def __init__(self, ctx: zmq.Context[Any], name: str, url: str) -> None:
        self.name = name
        self.uuid = uuid.uuid4()
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, name.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)
        self.hello()
        self.events: list[tuple[int, dict[str, StreamData]]] = []
        self.batches = 0

    def hello(self) -> None:
        self.sock.send_multipart([b"H", self.uuid.bytes])

    def receive(self, n: int, timeout: float = TIMEOUT) -> list[tuple[int, dict[str, StreamData]]]:
        """Collect until ``n`` events in all have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise AssertionError(f"{self.name} got {len(self.events)} of {n} events")
            self.events.extend(decode_events(self.sock.recv_multipart(copy=False)))
            self.batches += 1
        return self.events

    def nothing_more(self, wait: float = 0.3) -> bool:
        return not self.sock.poll(int(wait * 1000))


class Harness:
    """Plays the controller; builds ingesters, workers and STINS sources on free ports."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.ingesters: list[Ingester] = []
        self.sources: list[StinsSource] = []

    def settings(self, cls: type[Ingester], streams: Sequence[str], **kw: Any) -> Any:
        return cls.settings_class(
            ingester_streams=list(streams), redis_url=self.redis_url,
            ingester_url=f"tcp://127.0.0.1:{free_port()}", dfast_config_ttl=2.0,
            dfast_config_interval=0.2, build_meta_file=None, **kw)

    def ingester(self, cls: type[Ingester], streams: Sequence[str], **kw: Any) -> Any:
        ing = cls(self.settings(cls, streams, **kw))
        ing.start()
        self.ingesters.append(ing)
        wait_for(lambda: self.config(ing) is not None, what="config key")
        return ing

    def stins(self, **kw: Any) -> StinsSource:
        src = StinsSource(free_port(), **kw)
        self.sources.append(src)
        return src

    def worker(self, name: str, ing: Ingester) -> Worker:
        w = Worker(self.ctx, name, str(ing.state.url))
        wait_for(lambda: any(cw.name == name for cw in ing.state.connected_workers.values()),
                 what=f"hello of {name}")
        return w

    def config(self, ing: Ingester) -> dict[str, Any] | None:
        raw = self.redis.get(Keys.config("ingester", ing.state.name))
        return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]

    def update(self, streams: Sequence[str], uid: uuid.UUID | None = None,
               finished: bool = False, **kw: Any) -> uuid.UUID:
        uid = uid or uuid.uuid4()
        upd = ControllerUpdate(mapping_uuid=uid, streams=[StreamName(s) for s in streams],
                               active_streams=[StreamName(s) for s in streams],
                               finished=finished, **kw)
        self.redis.xadd(Keys.UPDATES, {"d": upd.model_dump_json()}, maxlen=100)
        return uid

    def start_scan(self, streams: Sequence[str], *ings: Ingester, **kw: Any) -> uuid.UUID:
        uid = self.update(streams, **kw)
        for ing in ings:
            wait_for(lambda ing=ing: (self.config(ing) or {}).get("mapping_uuid") == str(uid),
                     what="mapping uuid in config")
        return uid

    def assign(self, uid: uuid.UUID, first: int, cells: list[list[int | None]],
               workers: list[str]) -> None:
        """One batch: ``cells[row][stream]`` is a mask, or None for no frame."""
        present = np.array([[c is not None for c in row] for row in cells], np.uint8)
        masks = np.array([[c or 0 for c in row] for row in cells], np.uint64)
        batch = AssignmentBatch(first, present, masks, workers)
        self.redis.xadd(Keys.assigned(uid), batch.encode())  # type: ignore[arg-type]

    def close(self) -> None:
        for ing in self.ingesters:
            ing.close()
        for src in self.sources:
            src.close()
        self.ctx.destroy(linger=0)
        self.redis.close()


@pytest.fixture
def harness(redis_url: str) -> Iterator[Harness]:
    h = Harness(redis_url)
    try:
        yield h
    finally:
        h.close()


def stins_header(sd: StreamData) -> dict[str, Any]:
    assert sd.typ == "STINS"
    return json.loads(as_bytes(sd.frames[0]))  # type: ignore[no-any-return]


def image_numbers(events: list[tuple[int, dict[str, StreamData]]], stream: str) -> list[Any]:
    out: list[Any] = []
    for _evn, streams in events:
        head = stins_header(streams[stream])
        out.append(head["frame"] if head["htype"] == "image" else head["htype"])
    return out


# === routing ===


def test_frames_reach_exactly_the_masked_workers(harness: Harness) -> None:
    src = harness.stins(shape=(256, 256), dtype="uint16")  # 128 KiB: zero-copy frames
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0, w1 = harness.worker("w0", ing), harness.worker("w1", ing)
    uid = harness.start_scan(["eiger"], ing)
    both = 0b11
    # evn: 0 header->both, 1 img0->w0, 2 no frame, 3 img1->w1, 4 img2 discarded,
    #      5 img3->w0, 6 img4->w1, 7 img5->both, 8 end->both
    workers = ["w0", "w1"]
    harness.assign(uid, 0, [[both], [1], [None], [2], [0]], workers)
    harness.assign(uid, 5, [[1], [2], [both], [both]], workers)
    src.send_series(6)

    got0 = w0.receive(5)
    got1 = w1.receive(5)
    assert [e for e, _ in got0] == [0, 1, 5, 7, 8]
    assert [e for e, _ in got1] == [0, 3, 6, 7, 8]
    assert image_numbers(got0, "eiger") == ["header", 0, 3, 5, "series_end"]
    assert image_numbers(got1, "eiger") == ["header", 1, 4, 5, "series_end"]
    for evn, streams in got0 + got1:
        frames = streams["eiger"].frames
        head = stins_header(streams["eiger"])
        if head["htype"] == "image":
            assert len(frames) == 2
            assert as_bytes(frames[1]) == src.image(head["frame"]).tobytes(), evn
    assert w0.nothing_more() and w1.nothing_more()
    counters = wait_for(lambda: (c := ing.counter_values()).events_routed == 8 and c)
    assert counters.forwarded == 7
    assert counters.discarded_by_map == 1
    assert counters.discarded_outside_scan == 0 and counters.malformed == 0
    published = wait_for(lambda: (harness.config(ing) or {}).get("counters", {})
                         .get("events_routed") == 8 and harness.config(ing))
    assert published["counters"]["forwarded"] == 7
    assert published["processed_events"] == 8
    IngesterState.model_validate(published)  # the 0.2 state still parses


def test_three_phase_filter_and_malformed_messages(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    # Before the header: two stray images (outside the scan) and three malformed messages.
    src.send_image(100)
    src.send_raw([b"not json at all", b"payload"])
    src.send_image(101)
    src.send_raw([json.dumps({"msg_number": 1, "frame": 3}).encode()])  # no htype
    src.send_raw([json.dumps({"htype": "dimage-1.0"}).encode()])  # unknown htype
    wait_for(lambda: ing.counter_values().malformed == 3, what="malformed counted")
    harness.assign(uid, 0, [[1]] * 5, ["w0"])
    src.send_header()
    src.send_image(0)
    src.send_raw([json.dumps({"htype": 7}).encode()])  # malformed inside the series: dropped
    src.send_image(1)
    src.send_image(2)
    src.send_end()
    for i in (200, 201, 202):  # after the end: discarded until the next mapping
        src.send_image(i)
    got = w0.receive(5)
    assert image_numbers(got, "eiger") == ["header", 0, 1, 2, "series_end"]
    c = wait_for(lambda: (c := ing.counter_values()).discarded_outside_scan == 5 and c,
                 what="5 discarded outside the scan")
    assert c.malformed == 4
    assert c.forwarded == 5
    # The scan is finished; what arrives now is drained and counted too.
    harness.update(["eiger"], uid=uid, finished=True)
    src.send_image(300)
    wait_for(lambda: ing.counter_values().discarded_outside_scan == 6)
    assert w0.nothing_more()


def test_rows_wait_for_data_and_nothing_is_held_back(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    harness.assign(uid, 0, [[1]] * 12, ["w0"])
    src.send_header()
    src.send_image(0)
    # Ten more events are assigned, but what is there is delivered at once.
    assert [e for e, _ in w0.receive(2)] == [0, 1]
    for i in range(1, 10):
        src.send_image(i)
    src.send_end()
    assert [e for e, _ in w0.receive(12)] == list(range(12))


def test_new_mapping_restarts_the_series(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid1 = harness.start_scan(["eiger"], ing)
    harness.assign(uid1, 0, [[1]] * 4, ["w0"])
    src.send_series(2)
    assert image_numbers(w0.receive(4), "eiger") == ["header", 0, 1, "series_end"]
    uid2 = harness.start_scan(["eiger"], ing)
    harness.assign(uid2, 0, [[1]] * 3, ["w0"])
    src.send_image(99)  # before the new header: discarded
    src.send_series(1)
    got = w0.receive(7)[4:]
    assert image_numbers(got, "eiger") == ["header", 0, "series_end"]
    assert [e for e, _ in got] == [0, 1, 2]


def test_multi_stream_ingester(harness: Harness) -> None:
    a, b, c = harness.stins(), harness.stins(shape=(2,)), harness.stins()
    ing = harness.ingester(
        ZmqPullSingleIngester, ["a", "b", "c"],
        upstream_urls={"a": a.url, "b": b.url, "c": c.url})
    w0, w1 = harness.worker("w0", ing), harness.worker("w1", ing)
    # The mapping has a stream of another ingester ("x") between ours; "c" is not mapped.
    uid = harness.start_scan(["a", "x", "b"], ing)
    assert ing.active_streams == ["a", "b"]
    assert sorted(ing.upstream_streams) == ["a", "b"]
    both = 0b11
    cells: list[list[int | None]] = [
        [both, 1, both],   # 0: headers of a and b to both
        [1, 2, 2],         # 1: a0->w0, b0->w1
        [None, 1, 1],      # 2: b1->w0 only
        [1, None, 1],      # 3: a1 and b2 both to w0, one event
        [0, None, None],   # 4: a2 discarded
        [both, 1, both],   # 5: ends
    ]
    harness.assign(uid, 0, cells, ["w0", "w1"])
    a.send_series(3)
    b.send_series(3)
    got0 = w0.receive(5)
    got1 = w1.receive(3)
    assert [(e, sorted(s)) for e, s in got0] == [
        (0, ["a", "b"]), (1, ["a"]), (2, ["b"]), (3, ["a", "b"]), (5, ["a", "b"])]
    assert [(e, sorted(s)) for e, s in got1] == [(0, ["a", "b"]), (1, ["b"]), (5, ["a", "b"])]
    assert stins_header(got0[3][1]["a"])["frame"] == 1
    assert stins_header(got0[3][1]["b"])["frame"] == 2
    assert as_bytes(got0[2][1]["b"].frames[1]) == b.image(1).tobytes()
    counters = wait_for(lambda: (c := ing.counter_values()).events_routed == 6 and c)
    assert counters.discarded_by_map == 1
    assert counters.forwarded == 9


def test_unmapped_stream_upstream_is_closed_by_a_new_mapping(harness: Harness) -> None:
    a, b = harness.stins(), harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["a", "b"],
                           upstream_urls={"a": a.url, "b": b.url})
    harness.start_scan(["a", "b"], ing)
    assert sorted(ing.upstream_streams) == ["a", "b"]
    harness.start_scan(["b"], ing)
    assert ing.upstream_streams == ["b"]
    assert ing.active_streams == ["b"]


# === workers ===


def test_worker_connecting_late_gets_its_queued_batches(harness: Harness) -> None:
    src = harness.stins(shape=(200, 200))  # 80 KiB frames
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    uid = harness.start_scan(["eiger"], ing)
    harness.assign(uid, 0, [[1]] * 7, ["late"])
    src.send_series(5)
    wait_for(lambda: ing.counter_values().queued_for_absent_workers == 7, what="7 queued")
    late = harness.worker("late", ing)
    got = late.receive(7)
    assert [e for e, _ in got] == list(range(7))
    assert image_numbers(got, "eiger") == ["header", 0, 1, 2, 3, 4, "series_end"]
    assert as_bytes(got[3][1]["eiger"].frames[1]) == src.image(2).tobytes()
    c = wait_for(lambda: (c := ing.counter_values()).queued_for_absent_workers == 0 and c)
    assert c.dropped_for_absent_workers == 0


def test_hellos_register_and_expire(harness: Harness) -> None:
    ing = harness.ingester(Ingester, ["s"])
    w = harness.worker("alpha", ing)
    cfg = wait_for(lambda: (c := harness.config(ing)) and c["connected_workers"] and c)
    (entry,) = cfg["connected_workers"].values()
    assert entry["name"] == "alpha" and entry["service_uuid"] == str(w.uuid)
    w.sock.send_multipart([b"junk"])
    wait_for(lambda: ing.counter_values().bad_worker_messages == 1)
    # No more hellos: forgotten after 4 config intervals (0.8 s here).
    wait_for(lambda: not ing.state.connected_workers, timeout=5, what="worker expiry")


# === assignments ===


def test_bad_assignment_entries_are_counted_and_skipped(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    harness.redis.xadd(Keys.assigned(uid), {"b": b"\x00\x01", "w": b"[]"})
    harness.assign(uid, 0, [[1, 1]], ["w0"])  # two streams: the mapping has one
    harness.assign(uid, 0, [[1]] * 3, ["w0"])
    src.send_series(1)
    assert image_numbers(w0.receive(3), "eiger") == ["header", 0, "series_end"]
    assert ing.counter_values().bad_assignments == 2


# === extension API ===


class CountingIngester(Ingester):
    """0.2-style custom ingester: a counter stream plus a software-triggered stream."""

    stopped: list[str]

    def __init__(self, settings: IngesterSettings | None = None) -> None:
        super().__init__(settings)
        self.stopped = []

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        if stream == "dummy":
            while True:
                yield IsSoftwareTriggered()
        i = 0
        while True:
            await asyncio.sleep(0)
            if i == 2:
                yield "not stream data"  # type: ignore[misc]  # counted as malformed
            yield StreamData(typ="counter", frames=[str(i).encode()])
            i += 1

    async def stop_source(self, stream: StreamName) -> None:
        self.stopped.append(stream)

    def software_trigger(self) -> Iterator[dict[str, StreamData]]:
        k = 0
        while True:
            yield {"dummy": StreamData(typ="temperature", frames=[f"t{k}".encode()])}
            k += 1


def test_custom_run_source_with_software_trigger(harness: Harness) -> None:
    ing = harness.ingester(CountingIngester, ["cnt", "dummy"])
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["cnt", "dummy"], ing)
    harness.assign(uid, 0, [[1, 1], [1, None], [None, 1], [1, 1], [0, 1]], ["w0"])
    got = w0.receive(5)
    cnt = [as_bytes(s["cnt"].frames[0]) for _e, s in got if "cnt" in s]
    assert cnt == [b"0", b"1", b"2"]  # the third counter item (b"3") was discarded by the map
    dummy = [(e, s["dummy"].typ, as_bytes(s["dummy"].frames[0])) for e, s in got if "dummy" in s]
    # One software_trigger() item per event handled; placeholders get its value.
    assert dummy == [(0, "temperature", b"t0"), (2, "temperature", b"t2"),
                     (3, "temperature", b"t3"), (4, "temperature", b"t4")]
    c = ing.counter_values()
    assert c.malformed == 1 and c.discarded_by_map == 1
    harness.start_scan(["cnt"], ing)  # a new mapping closes the generators
    wait_for(lambda: sorted(ing.stopped) == ["cnt", "dummy"], what="stop_source calls")


def test_subclass_of_builtin_with_its_own_run_source(harness: Harness) -> None:
    src = harness.stins()

    class WithSoftTrigger(ZmqPullSingleIngester):
        async def run_source(
            self, stream: StreamName
        ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
            if stream == "dummy":
                while True:
                    yield IsSoftwareTriggered
            async for item in super().run_source(stream):
                yield item

        def software_trigger(self) -> Iterator[dict[str, StreamData]]:
            while True:
                yield {"dummy": StreamData(typ="x", frames=[b"sw"])}

    ing = harness.ingester(WithSoftTrigger, ["eiger", "dummy"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger", "dummy"], ing)
    harness.assign(uid, 0, [[1, 1]] * 4, ["w0"])
    src.send_image(50)  # before the header: the generator path skips it too
    src.send_series(2)
    got = w0.receive(4)
    assert image_numbers(got, "eiger") == ["header", 0, 1, "series_end"]
    assert all(as_bytes(s["dummy"].frames[0]) == b"sw" for _e, s in got)
    assert ing.upstream_streams == []  # the generator path, not the fast path


@pytest.mark.parametrize("socket_type", ["PULL", "SUB"])
def test_multipart_ingester(harness: Harness, socket_type: str) -> None:
    port = free_port()
    up = harness.ctx.socket(zmq.PUSH if socket_type == "PULL" else zmq.PUB)
    up.bind(f"tcp://127.0.0.1:{port}")
    ing = harness.ingester(MultipartIngester, ["pcap"], upstream_url=f"tcp://127.0.0.1:{port}",
                           upstream_socket=socket_type, stream_typ="PCAP")
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["pcap"], ing)
    harness.assign(uid, 0, [[1], [0], [1]], ["w0"])
    if socket_type == "SUB":
        time.sleep(0.5)  # let the subscription reach the publisher
    messages = [[b"m%d" % i, b"x" * i, b"end"] for i in range(3)]
    for msg in messages:
        up.send_multipart(msg)
    got = w0.receive(2)
    assert [e for e, _ in got] == [0, 2]
    for (_e, streams), msg in zip(got, [messages[0], messages[2]], strict=True):
        assert streams["pcap"].typ == "PCAP"
        assert [as_bytes(f) for f in streams["pcap"].frames] == msg
    harness.update(["pcap"], uid=uid, finished=True)
    wait_for(lambda: ing._scan is not None and ing._scan.finished)
    up.send_multipart([b"late"])
    wait_for(lambda: ing.counter_values().discarded_outside_scan == 1)
    up.close(linger=0)


def test_registry_loads_builtins_and_user_classes(harness: Harness) -> None:
    assert ingester_class("ZmqPullSingleIngester") is ZmqPullSingleIngester
    assert ingester_class("tests.test_ingester:CountingIngester") is CountingIngester
    with pytest.raises(ImportError, match="unknown ingester"):
        ingester_class("NoSuchIngester")
    with pytest.raises(ImportError, match="not a subclass"):
        ingester_class("tests.stins_source:StinsSource")
    ing = create_ingester("ZmqPullSingleIngester", ingester_streams=["e"],
                          redis_url=harness.redis_url, upstream_url="tcp://127.0.0.1:1",
                          build_meta_file=None)
    try:
        assert ing.state.name == "e-ingester"
    finally:
        ing.close()
    with pytest.raises(ValueError, match="no upstream"):
        ZmqPullSingleIngester.settings_class(ingester_streams=["e"], redis_url=harness.redis_url)


# === shutdown ===


def test_close_deletes_the_config_key(harness: Harness) -> None:
    ing = harness.ingester(Ingester, ["s"])
    key = Keys.config("ingester", ing.state.name)
    assert harness.redis.exists(key)
    ing.close()
    assert not harness.redis.exists(key)


def test_sigterm_stops_the_process_cleanly(harness: Harness) -> None:
    src = harness.stins()
    name = f"sig-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, REDIS_URL=harness.redis_url, INGESTER_STREAMS='["eiger"]',
               INGESTER_NAME=name, INGESTER_URL=f"tcp://127.0.0.1:{free_port()}",
               UPSTREAM_URL=src.url, DFAST_CONFIG_TTL="2", DFAST_CONFIG_INTERVAL="0.2",
               BUILD_META_FILE="")
    code = ("from dranspose_fast.ingesters import ZmqPullSingleIngester\n"
            "ZmqPullSingleIngester().run()\n")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=root)
    key = Keys.config("ingester", name)
    try:
        wait_for(lambda: harness.redis.exists(key), timeout=20, what="subprocess config")
        uid = harness.update(["eiger"])
        wait_for(lambda: str(uid).encode() in (harness.redis.get(key) or b""), what="scan")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not harness.redis.exists(key)


# === joining late, Redis restarts ===


def test_late_ingester_learns_the_scan_and_reads_assignments_from_the_start(
    harness: Harness,
) -> None:
    src = harness.stins()
    uid = harness.update(["eiger"])
    harness.assign(uid, 0, [[1]] * 2, ["w0"])
    harness.assign(uid, 2, [[1]] * 2, ["w0"])
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    wait_for(lambda: (harness.config(ing) or {}).get("mapping_uuid") == str(uid))
    w0 = harness.worker("w0", ing)
    src.send_series(2)
    assert image_numbers(w0.receive(4), "eiger") == ["header", 0, 1, "series_end"]


def test_redis_restart_ends_the_scan(redis_server: Any) -> None:
    h = Harness(redis_server.url)
    try:
        src = h.stins()
        ing = h.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
        uid = h.start_scan(["eiger"], ing)
        redis_server.restart()
        wait_for(lambda: ing._scan is not None and ing._scan.uuid == uid and ing._scan.finished,
                 what="scan ended by the restart")
        src.send_image(1)  # outside any scan now: drained and counted
        wait_for(lambda: ing.counter_values().discarded_outside_scan == 1)
        wait_for(lambda: h.config(ing) is not None, what="config republished")
    finally:
        h.close()


# === buffers sized in bytes, back-pressure ===


def test_high_water_marks_are_sized_in_bytes(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url,
                           upstream_frame_bytes=64 << 10, upstream_buffer_bytes=2 << 20)
    harness.start_scan(["eiger"], ing)
    upstream = wait_for(lambda: ing._upstreams.get(StreamName("eiger")), what="upstream")
    assert upstream.socket.getsockopt(zmq.RCVHWM) == 32  # 2 MiB of 64 KiB frames
    assert ing._router is not None and ing._router.getsockopt(zmq.SNDHWM) == 32
    default = harness.settings(ZmqPullSingleIngester, ["x"], upstream_url=src.url)
    assert default.hwm == 256  # 256 MiB of 1 MiB frames
    tiny = harness.settings(ZmqPullSingleIngester, ["x"], upstream_url=src.url,
                            upstream_frame_bytes=1 << 30, upstream_buffer_bytes=1)
    assert tiny.hwm == 16  # never below the floor


def test_back_pressure_reaches_the_source_and_nothing_is_lost(harness: Harness) -> None:
    """Without assigned rows the ingester reads nothing: the source's sends block."""
    frame = 64 << 10
    n = 2000  # 128 MiB: far more than the HWMs and the loopback TCP buffers hold
    port = free_port()
    push = harness.ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 4)
    push.bind(f"tcp://127.0.0.1:{port}")
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"],
                           upstream_url=f"tcp://127.0.0.1:{port}",
                           upstream_frame_bytes=frame, upstream_buffer_bytes=1 << 20)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    image = np.arange(frame, dtype=np.uint8)

    def message(i: int) -> list[bytes]:
        head = {"htype": "image", "frame": i, "shape": [frame], "type": "uint8"}
        return [json.dumps(head).encode(), (image + i % 251).tobytes()]

    push.send_multipart([json.dumps({"htype": "header"}).encode()])
    sent = 0
    deadline = time.monotonic() + 3.0
    while sent < n and time.monotonic() < deadline:
        try:
            push.send_multipart(message(sent), zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            time.sleep(0.01)
    assert sent < n // 2, f"the source was never held back ({sent} sent)"
    counters = ing.counter_values()
    assert counters.discarded_outside_scan == 0 and counters.malformed == 0
    harness.assign(uid, 0, [[1]] * (n + 2), ["w0"])
    while sent < n:
        push.send_multipart(message(sent))
        sent += 1
    push.send_multipart([json.dumps({"htype": "series_end"}).encode()])
    got = w0.receive(n + 2, timeout=60)
    assert [e for e, _ in got] == list(range(n + 2))
    for evn in (1, n // 2, n):
        head = stins_header(got[evn][1]["eiger"])
        assert head["frame"] == evn - 1
        assert as_bytes(got[evn][1]["eiger"].frames[1]) == message(evn - 1)[1]
    counters = ing.counter_values()
    assert counters.forwarded == n + 2 and counters.dropped_for_absent_workers == 0
    push.close(linger=0)
