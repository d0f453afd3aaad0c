"""Packed batches: the compiled pack/unpack kernels and the dataplane framing around them."""

import os

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast import _batch
from dranspose_fast.event import StreamData
from dranspose_fast.runtime import dataplane


def events_strategy() -> st.SearchStrategy:
    frame = st.one_of(st.binary(max_size=300), st.integers(0, 3).map(lambda k: bytes(k * 70000)))
    streams = st.dictionaries(
        st.sampled_from(["eiger", "orca", "pcap"]),
        st.tuples(st.sampled_from(["STINS", "JSON"]), st.lists(frame, max_size=3)),
        max_size=3,
    )
    return st.lists(st.tuples(st.integers(0, 2**40), streams), max_size=8, unique_by=lambda e: e[0])


@settings(deadline=None, max_examples=150)
@given(events_strategy())
def test_roundtrip(events: list) -> None:
    batch = [
        (evn, {n: StreamData(typ=t, frames=frames) for n, (t, frames) in streams.items()})
        for evn, streams in events
    ]
    frames = dataplane.encode_events(batch)
    decoded = dataplane.decode_events(frames)
    expected = [(evn, s) for evn, s in batch if s]
    assert [e for e, _ in decoded] == [e for e, _ in expected]
    for (_, got), (_, want) in zip(decoded, expected, strict=True):
        assert set(got) == set(want)
        for name in want:
            assert got[name].typ == want[name].typ
            assert [bytes(f) for f in got[name].frames] == list(want[name].frames)


def test_large_frames_travel_as_their_own_frames_without_copy() -> None:
    big = os.urandom(dataplane.ZERO_COPY_THRESHOLD)
    small = os.urandom(dataplane.ZERO_COPY_THRESHOLD - 1)
    frames = dataplane.encode_events([(5, {"d": StreamData(typ="STINS", frames=[small, big])})])
    assert len(frames) == 5  # kind, meta, index, payload, one external
    assert frames[4] is big
    assert len(frames[3]) == len(small)
    ((evn, streams),) = dataplane.decode_events(frames)
    assert evn == 5 and streams["d"].frames[1] is big and streams["d"].frames[0] == small


def test_over_real_zmq_sockets() -> None:
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        big = os.urandom(1 << 20)
        batch = [
            (i, {"eiger": StreamData(typ="STINS", frames=[b'{"htype":"image"}', big])})
            for i in range(3)
        ]
        push.send_multipart(dataplane.encode_events(batch), copy=False)
        received = pull.recv_multipart(copy=False)
        decoded = dataplane.decode_events(received)
        assert [e for e, _ in decoded] == [0, 1, 2]
        frame = decoded[2][1]["eiger"].frames[1]
        assert isinstance(frame, zmq.Frame) and frame.bytes == big
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda f: f[:2] + [f[2][:10]] + f[3:], "shorter than its header"),
        (lambda f: f[:2] + [f[2][:-1]] + f[3:], "does not hold"),
        (lambda f: f[:3] + [f[3][:-1]] + f[4:], "payload"),
        (lambda f: f[:2] + [b"\0" * len(f[2])] + f[3:], "magic"),
    ],
)
def test_malformed_batches_raise_clear_errors(mangle, message) -> None:
    frames = dataplane.encode_events(
        [(1, {"s": StreamData(typ="STINS", frames=[b"header", b"x" * 100])})]
    )
    with pytest.raises(_batch.BatchFormatError, match=message):
        dataplane.decode_events(mangle(frames))


def test_missing_external_frame_is_reported() -> None:
    frames = dataplane.encode_events([(1, {"s": StreamData(typ="S", frames=[bytes(1 << 17)])})])
    with pytest.raises(_batch.BatchFormatError, match="external frame 0 of 0"):
        dataplane.decode_events(frames[:4])


def test_results_roundtrip_and_errors() -> None:
    frames = dataplane.encode_results("w1", "abc", [(3, b"one"), (9, b""), (4, b"x" * 1000)])
    worker, phash, results = dataplane.decode_results(frames)
    assert (worker, phash) == ("w1", "abc")
    assert [(e, bytes(p)) for e, p in results] == [(3, b"one"), (9, b""), (4, b"x" * 1000)]
    with pytest.raises(_batch.BatchFormatError, match="overruns"):
        dataplane.decode_results(frames[:3] + [frames[3][:-1], frames[4]])
    with pytest.raises(_batch.BatchFormatError, match="multiple of 16"):
        dataplane.decode_results(frames[:2] + [frames[2][:-1], *frames[3:]])
