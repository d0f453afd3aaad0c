"""Ingester resume, piece by piece: frame numbers per protocol, placeholders, the resume
points in a real Redis, the workers' drop and the controller's totals (the whole path with
real processes is ``test_faults_ingester``)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
import pytest
import redis
import zmq

from dranspose_fast.controller.scan import ScanState
from dranspose_fast.event import EventData, make_stream_data
from dranspose_fast.ingester.resume import ResumePoints
from dranspose_fast.ingester.sources import LOST, RUNNING, Counters, UpstreamSource
from dranspose_fast.ingesters.zmqpull_eiger_legacy import EigerLegacyFramer
from dranspose_fast.ingesters.zmqpull_single import StinsSource
from dranspose_fast.ingesters.zmqpull_stream2 import Stream2Framer
from dranspose_fast.mapping import MappingSequence
from dranspose_fast.protocol import StreamName
from dranspose_fast.runtime.redis_messages import CreditMessage, Keys
from dranspose_fast.worker.upstream_loss import UpstreamLosses
from tests.captures import read_capture
from tests.stins_source import StinsSource as StinsDetector
from tests.stream2_messages import end_message, image_message, start_message

log = logging.getLogger("test_resume")


# === the protocols' own numbers (the start message is 0) ===


def test_stins_numbers_images_after_the_header() -> None:
    det = StinsDetector.__new__(StinsDetector)
    det.msg_number, det.shape, det.dtype = 0, (2, 2), np.dtype("uint16")
    src = StinsSource(zmq.Context.instance(), StreamName("s"), "tcp://127.0.0.1:1", Counters(), log)
    assert src.message_index([zmq.Frame(f) for f in det.image_frames(7)]) == 8
    assert src.message_index([zmq.Frame(f) for f in det.header_frames()]) is None
    assert src.message_index([zmq.Frame(b"not json")]) is None


def test_eiger_legacy_numbers_on_the_capture() -> None:
    framer = EigerLegacyFramer()
    assert [framer.message_index(m) for m in read_capture("eiger-small.cbors")] == [
        None, 1, 2, 3, None]


def test_stream2_numbers_by_image_id() -> None:
    framer = Stream2Framer()
    image = image_message(1, 4, {"threshold_1": np.zeros((2, 2), np.uint16)})
    assert framer.message_index([image]) == 5
    assert framer.message_index([start_message(1)]) is None
    assert framer.message_index([end_message(1)]) is None
    assert framer.message_index([b"\xff"]) is None


# === placeholders on resume, with a real PUSH/PULL pair ===


@pytest.fixture
def push() -> Any:
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(linger=0)


def _fill_until(src: UpstreamSource, n: int) -> None:
    deadline = time.monotonic() + 10
    while src.available < n and time.monotonic() < deadline:
        src.fill(n)
        time.sleep(0.01)


def test_a_resumed_stream_puts_placeholders_before_its_first_frame(push: Any) -> None:
    sock, url = push
    src = StinsSource(zmq.Context.instance(), StreamName("s"), url, Counters(), log)
    src.open()
    try:
        src.resume(saved_position=3)  # the frame number wins over the saved position
        assert src.phase == RUNNING
        det = StinsDetector.__new__(StinsDetector)
        det.msg_number, det.shape, det.dtype = 0, (2, 2), np.dtype("uint16")
        sock.send_multipart(det.image_frames(10))
        sock.send_multipart(det.image_frames(11))
        _fill_until(src, 13)
        assert src.available == 13 and src.skipped == 11 and src.skipped_exact
        assert all(m is LOST for m in src.msgs[:11]) and len(src.msgs[11]) == 2
        src.consumed(12)
        assert src.position == 12
    finally:
        src.close()


def test_without_frame_numbers_the_saved_position_is_used(push: Any) -> None:
    sock, url = push
    src = UpstreamSource(zmq.Context.instance(), StreamName("m"), url, Counters(), log)
    src.open()
    try:
        src.resume(saved_position=4)
        sock.send_multipart([b"a"])
        _fill_until(src, 5)
        assert src.skipped == 4 and not src.skipped_exact and src.msgs[:4] == [LOST] * 4
    finally:
        src.close()


# === resume points in Redis ===


def test_resume_points_let_the_next_process_resume(redis_url: str, push: Any) -> None:
    client = redis.Redis.from_url(redis_url)
    uid = uuid.uuid4()
    ctx: zmq.Context[Any] = zmq.Context.instance()
    stins = StinsSource(ctx, StreamName("eiger"), push[1], Counters(), log)
    plain = UpstreamSource(ctx, StreamName("plain"), push[1], Counters(), log)
    first = ResumePoints(client, log)
    for src in (stins, plain):
        src.begin()
    first.join(uid, [stins, plain], [])
    assert client.hgetall(Keys.resume(uid)) == {b"pos:plain": b"0"}
    assert stins.on_start is not None
    stins.on_start(stins, [zmq.Frame(b'{"htype": "header"}')])
    stins.position, plain.position = 9, 7
    first.save([stins, plain])
    saved = client.hgetall(Keys.resume(uid))
    assert saved[b"pos:eiger"] == b"9" and saved[b"pos:plain"] == b"7"
    assert b"start:eiger" in saved and first.report() == {}

    second = ResumePoints(client, log)
    again = [StinsSource(ctx, StreamName("eiger"), push[1], Counters(), log),
             UpstreamSource(ctx, StreamName("plain"), push[1], Counters(), log),
             StinsSource(ctx, StreamName("other"), push[1], Counters(), log)]
    for src in again:
        src.begin()
    second.join(uid, again, [])
    assert [s.resume_from for s in again] == [9, 7, None]
    assert set(second.resumed) == {"eiger", "plain"}


# === the workers' drop and the controller's totals ===


def _event(evn: int, **streams: list[bytes]) -> EventData:
    return EventData(event_number=evn, streams={
        s: make_stream_data("STINS", frames) for s, frames in streams.items()})


def test_a_worker_drops_and_counts_events_with_a_placeholder() -> None:
    losses = UpstreamLosses()
    ready = [_event(1, a=[b"x"], b=[]), _event(2, a=[b"x"], b=[b"y"]), _event(3, a=[], b=[])]
    kept = losses.keep(ready, log, "w0")
    assert [e.event_number for e in kept] == [2]
    assert losses.events == {"a": 1, "b": 2} and losses.first == {"a": [3], "b": [1, 3]}


def test_the_controller_sums_losses_and_says_so_in_the_reason() -> None:
    scan = ScanState(uuid.uuid4(), MappingSequence.from_uniform(["eiger"], 4))
    scan.add_worker("w0", ["generic"], "s0")
    scan.add_worker("w1", ["generic"], "s1")
    scan.credit(CreditMessage("w0", 4, 0, 0, service="s0", lost={"eiger": 2},
                              lost_first={"eiger": [5, 1]}), lambda _n: ["generic"])
    scan.credit(CreditMessage("w1", 4, 0, 0, service="s1", lost={"eiger": 1},
                              lost_first={"eiger": [3]}), lambda _n: ["generic"])
    losses = scan.upstream_losses()
    assert losses["eiger"].events == 3 and losses["eiger"].first_events == [1, 3, 5]
    assert scan.completion_reason() == (
        "completed; 3 events lost upstream in stream eiger (ingester restart)")
    scan.resumed["eiger"] = False
    assert "at least 3 events" in str(scan.completion_reason())
