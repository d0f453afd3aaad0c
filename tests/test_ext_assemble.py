"""The compiled assembly kernels (``_assemble``) on their own."""

from __future__ import annotations

from typing import Any

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast import _assemble
from dranspose_fast.event import EventData, StreamData, make_stream_data
from dranspose_fast.runtime import dataplane


def sd(*frames: bytes) -> StreamData:
    return make_stream_data("STINS", list(frames))


def test_make_event_is_a_real_event_data() -> None:
    streams = {"a": sd(b"1")}
    ev = _assemble.make_event(7, streams)
    assert type(ev) is EventData
    assert ev.event_number == 7 and ev.streams is streams
    # the same as a validated model, field for field
    assert ev == EventData(event_number=7, streams={"a": sd(b"1")})
    assert ev.model_dump()["streams"]["a"]["frames"] == [b"1"]


def test_add_completes_single_ingester_events_without_buffering() -> None:
    expected = {0: 1, 1: 1}
    pending: dict[int, Any] = {}
    ready: list[EventData] = []
    dup = _assemble.add([(0, {"a": sd(b"x")}), (1, {"a": sd(b"y")}), (2, {"a": sd(b"z")})],
                        expected, pending, ready)
    assert dup == 0
    assert [(e.event_number, e.streams["a"].frames) for e in ready] == [(0, [b"x"]), (1, [b"y"])]
    assert expected == {} and list(pending) == [2]  # 2 is not assigned yet


def test_add_merges_and_counts_duplicates_keeping_the_first() -> None:
    expected = {5: 2}
    pending: dict[int, Any] = {}
    ready: list[EventData] = []
    assert _assemble.add([(5, {"a": sd(b"first")})], expected, pending, ready) == 0
    assert ready == []
    assert _assemble.add([(5, {"a": sd(b"again"), "b": sd(b"b")})], expected, pending,
                         ready) == 1
    assert len(ready) == 1
    assert ready[0].streams["a"].frames == [b"first"]
    assert sorted(ready[0].streams) == ["a", "b"]
    assert expected == {} and pending == {}


def test_expect_releases_events_that_arrived_first() -> None:
    pending: dict[int, Any] = {3: {"a": sd(b"a")}, 4: {"a": sd(b"a")}}
    expected: dict[int, int] = {}
    ready: list[EventData] = []
    _assemble.expect([3, 4, 9], [1, 2, 1], expected, pending, ready)
    assert [e.event_number for e in ready] == [3]
    assert expected == {4: 2, 9: 1} and list(pending) == [4]


def test_expect_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 event numbers but 1 stream counts"):
        _assemble.expect([1, 2], [1], {}, {}, [])


def test_unpacked_batch_assembles_with_zero_copy_big_frames() -> None:
    big = bytes(range(256)) * 300  # 76.8 kB: at or above the zero-copy threshold
    assert len(big) >= dataplane.ZERO_COPY_THRESHOLD
    frames = dataplane.encode_events([(0, {"a": sd(b"small", big)}), (1, {"a": sd(b"s1")})])
    received = [zmq.Frame(f) for f in frames]  # as recv_multipart(copy=False) gives them
    ready: list[EventData] = []
    _assemble.add(dataplane.decode_events(received), {0: 1, 1: 1}, {}, ready)
    f0 = ready[0].streams["a"].frames
    assert type(f0[0]) is bytes and f0[0] == b"small"
    assert isinstance(f0[1], zmq.Frame) and f0[1] is received[4]
    assert f0[1].bytes == big
    assert ready[1].streams["a"].frames == [b"s1"]


@settings(deadline=None, max_examples=80)
@given(st.lists(st.sets(st.sampled_from("abcd"), min_size=1), min_size=1, max_size=20),
       st.randoms(use_true_random=False))
def test_every_event_completes_once_whatever_the_interleaving(
    layout: list[set[str]], rnd: Any
) -> None:
    # one queue per ingester (stream), each in event order, plus the assignment rows
    queues: list[list[tuple[str, Any]]] = [
        [("data", (evn, {s: sd(f"{s}{evn}".encode())})) for evn, streams in enumerate(layout)
         if s in streams] for s in "abcd"
    ]
    queues.append([("assign", (evn, len(streams))) for evn, streams in enumerate(layout)])
    expected: dict[int, int] = {}
    pending: dict[int, Any] = {}
    ready: list[EventData] = []
    while any(queues):
        q = rnd.choice([q for q in queues if q])
        kind, item = q.pop(0)
        if kind == "data":
            assert _assemble.add([item], expected, pending, ready) == 0
        else:
            _assemble.expect([item[0]], [item[1]], expected, pending, ready)
    assert sorted(e.event_number for e in ready) == list(range(len(layout)))
    for e in ready:
        assert set(e.streams) == layout[e.event_number]
        for s, data in e.streams.items():
            assert data.frames == [f"{s}{e.event_number}".encode()]
    assert expected == {} and pending == {}
