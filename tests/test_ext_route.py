"""The compiled route-and-pack step (``_ext/_route.pyx``) against a plain Python model.

Every batch it returns is read back with ``_batch.unpack`` (the worker's reader), so these tests
also pin the wire layout: the same index/payload/externals as ``dataplane.encode_events``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast import _batch, _route

THRESHOLD = 1024
STREAMS = [("a", "STINS"), ("b", "multipart"), ("c", "raw")]


def run(present: Any, masks: Any, messages: list[list[list[Any]]], pos: int = 0,
        max_rows: int = 1 << 30, valid: int = (1 << 64) - 1, first: int = 0,
        taken: Any = None) -> tuple[Any, ...]:
    present = np.ascontiguousarray(present, np.uint8)
    masks = np.ascontiguousarray(masks, np.uint64)
    if taken is None:
        taken = np.zeros(present.shape[1], np.intp)
    out = _route.route_pack(present, masks, pos, max_rows, first, messages, taken, valid,
                            THRESHOLD)
    return (*out, taken)


def unpacked(batch: tuple[Any, ...], nstreams: int) -> list[tuple[int, dict[str, list[bytes]]]]:
    _slot, index, payload, externals, nevents = batch
    events = _batch.unpack(index, payload, externals, STREAMS[:nstreams])
    assert len(events) == nevents
    return [(evn, {s: [_bytes(f) for f in d.frames] for s, d in streams.items()})
            for evn, streams in events]


def _bytes(frame: Any) -> bytes:
    return bytes(frame)


def model(present: Any, masks: Any, messages: list[list[list[bytes]]], first: int,
          valid: int) -> dict[int, list[tuple[int, dict[str, list[bytes]]]]]:
    """What every slot should get: row by row, stopping at the first row lacking a message."""
    nrows, nstreams = present.shape
    cur = [0] * nstreams
    out: dict[int, list[tuple[int, dict[str, list[bytes]]]]] = {}
    for r in range(nrows):
        needed = [k for k in range(nstreams) if present[r, k]]
        if any(cur[k] >= len(messages[k]) for k in needed):
            break
        for k in needed:
            msg = messages[k][cur[k]]
            cur[k] += 1
            mask = int(masks[r, k])
            if mask == 0 or mask & ~valid:
                continue
            for w in range(64):
                if mask >> w & 1:
                    events = out.setdefault(w, [])
                    if not events or events[-1][0] != first + r:
                        events.append((first + r, {}))
                    events[-1][1][STREAMS[k][0]] = list(msg)
    return out


def test_round_trip_small_and_large_frames() -> None:
    big = np.arange(THRESHOLD * 3, dtype=np.uint8).tobytes()
    present = [[1, 1], [1, 0], [0, 0], [1, 1]]
    masks = [[1, 3], [2, 0], [0, 0], [0, 5]]
    messages = [[[b"h0", b"a0"], [b"h1", big], [b"h3", b"a3"]], [[b"b0"], [b"b3", big]]]
    pos, routed, fwd, disc, bad, first_bad, batches, taken = run(present, masks, messages,
                                                                 first=10)
    assert (pos, routed, fwd, disc, bad, first_bad) == (4, 3, 4, 1, 0, -1)
    assert taken.tolist() == [3, 2]
    got = {b[0]: unpacked(b, 2) for b in batches}
    assert got == {
        0: [(10, {"a": [b"h0", b"a0"], "b": [b"b0"]}), (13, {"b": [b"b3", big]})],
        1: [(10, {"b": [b"b0"]}), (11, {"a": [b"h1", big]})],
        2: [(13, {"b": [b"b3", big]})],
    }


def test_large_frames_are_the_objects_received() -> None:
    """Zero copy: the externals are the very zmq.Frame objects, shared between workers."""
    big = zmq.Frame(bytes(THRESHOLD * 4))
    small = zmq.Frame(b"x" * 10)
    *_, batches, _taken = run([[1]], [[3]], [[[small, big]]])
    assert [b[0] for b in batches] == [0, 1]
    for batch in batches:
        assert len(batch[3]) == 1 and batch[3][0] is big
        assert batch[2] == b"x" * 10  # the small frame is copied into the payload


def test_stops_at_the_first_row_whose_message_is_missing() -> None:
    present = [[1, 1], [1, 1], [1, 0]]
    masks = [[1, 1], [1, 1], [1, 0]]
    messages: list[list[list[Any]]] = [[[b"a0"], [b"a1"], [b"a2"]], [[b"b0"]]]
    pos, routed, *_, batches, taken = run(present, masks, messages)
    assert (pos, routed, taken.tolist()) == (1, 1, [1, 1])
    assert unpacked(batches[0], 2) == [(0, {"a": [b"a0"], "b": [b"b0"]})]
    messages[1].append([b"b1"])  # it arrives: routing resumes where it stopped
    pos, routed, *_, batches, taken = run(present, masks, messages, pos=pos, taken=taken)
    assert (pos, routed, taken.tolist()) == (3, 2, [3, 2])
    assert unpacked(batches[0], 2) == [(1, {"a": [b"a1"], "b": [b"b1"]}), (2, {"a": [b"a2"]})]


def test_max_rows_counts_rows_with_a_cell() -> None:
    present = [[0], [1], [0], [1], [1]]
    masks = [[0], [1], [0], [1], [1]]
    messages = [[[b"1"], [b"3"], [b"4"]]]
    pos, routed, *_, batches, taken = run(present, masks, messages, max_rows=2)
    assert (pos, routed, taken.tolist()) == (4, 2, [2])
    assert [e for e, _ in unpacked(batches[0], 1)] == [1, 3]


def test_bad_masks_are_counted_and_their_frames_dropped() -> None:
    present = [[1], [1], [1]]
    masks = [[1], [4], [2 | 4]]
    messages = [[[b"0"], [b"1"], [b"2"]]]
    pos, routed, fwd, disc, bad, first_bad, batches, _ = run(present, masks, messages,
                                                             valid=0b11, first=100)
    assert (pos, routed, fwd, disc, bad, first_bad) == (3, 3, 1, 0, 2, 101)
    assert [b[0] for b in batches] == [0]


def test_bad_arguments_raise_route_error_and_change_nothing() -> None:
    taken = np.zeros(1, np.intp)
    with pytest.raises(_route.RouteError, match="masks of shape"):
        _route.route_pack(np.ones((2, 1), np.uint8), np.ones((3, 1), np.uint64), 0, 10, 0,
                          [[]], taken, 1, THRESHOLD)
    with pytest.raises(_route.RouteError, match="1 streams but 2 message lists"):
        _route.route_pack(np.ones((1, 1), np.uint8), np.ones((1, 1), np.uint64), 0, 10, 0,
                          [[], []], taken, 1, THRESHOLD)
    with pytest.raises(_route.RouteError, match="not a list of frames"):
        bad: list[Any] = [[b"ok"], b"not a message"]
        run([[1], [1]], [[1], [1]], [bad], taken=taken)
    assert taken.tolist() == [0]
    with pytest.raises(_route.RouteError, match="position 5"):
        run([[1]], [[1]], [[[b"x"]]], taken=np.array([5], np.intp))
    with pytest.raises(_route.RouteError, match="row 7 is outside"):
        run([[1]], [[1]], [[[b"x"]]], pos=7)


@st.composite
def scenarios(draw: Any) -> tuple[Any, ...]:
    nstreams = draw(st.integers(1, 3))
    nrows = draw(st.integers(0, 30))
    present = np.array(draw(st.lists(st.lists(st.integers(0, 1), min_size=nstreams,
                                              max_size=nstreams),
                                     min_size=nrows, max_size=nrows)),
                       np.uint8).reshape(nrows, nstreams)
    masks = np.array(draw(st.lists(st.lists(st.integers(0, 15), min_size=nstreams,
                                            max_size=nstreams),
                                   min_size=nrows, max_size=nrows)),
                     np.uint64).reshape(nrows, nstreams) * present
    cells = present.sum(axis=0).tolist()
    frame = st.one_of(st.binary(max_size=20), st.integers(THRESHOLD, THRESHOLD + 50).map(
        lambda n: bytes([n % 251]) * n))
    messages = [[draw(st.lists(frame, max_size=3)) for _ in range(draw(st.integers(0, c)))]
                for c in cells]
    return present, masks, messages, draw(st.integers(0, 1000)), draw(st.integers(0, 15))


@settings(deadline=None, max_examples=150)
@given(scenarios())
def test_matches_the_python_model(case: tuple[Any, ...]) -> None:
    present, masks, messages, first, valid = case
    *_, batches, taken = run(present, masks, messages, first=first, valid=valid)
    got = {b[0]: unpacked(b, present.shape[1]) for b in batches}
    assert got == model(present, masks, messages, first, valid)
    assert [b[0] for b in batches] == sorted(got)
