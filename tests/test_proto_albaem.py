"""AlbaEM electrometer stream: 0.2's models against dranspose 0.2's on a real capture, the SUB
ingester on real sockets (capture published, events out to DEALER workers), bad input.

The 0.2 comparison runs in 0.2's own venv (``DRANSPOSE02_PYTHON``); without it that test
skips, under ``CI=true`` it fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dranspose_fast.data.albaem import AlbaemData, AlbaemEnd, AlbaemPacket, AlbaemStart
from dranspose_fast.event import StreamData
from dranspose_fast.ingester import IsSoftwareTriggered
from dranspose_fast.ingester.framing import DATA, END, START, FrameError
from dranspose_fast.ingesters import ingester_class
from dranspose_fast.ingesters.zmqsub_albaem import (
    AlbaemFramer,
    ZmqSubAlbaemIngester,
    ZmqSubAlbaemSettings,
)
from dranspose_fast.protocol import StreamName
from tests.captures import CAPTURES, read_capture
from tests.compat.dr02 import run_dr02
from tests.ingester_harness import Harness, as_bytes, harness, wait_for  # noqa: F401
from tests.protocol_harness import stream_capture

CAPTURE = "albaem-dump.cbors"

DR02_SCRIPT = r'''
import json, sys
import cbor2
from dranspose.data.albaem import AlbaemPacket

out = []
with open(sys.argv[1], "rb") as fh:
    size = fh.seek(0, 2)
    fh.seek(0)
    while fh.tell() < size:
        frames = [bytes(f) for f in cbor2.load(fh)]
        packet = AlbaemPacket.validate_json(frames[0])
        out.append([type(packet).__name__, packet.model_dump()])
for text in json.loads(sys.stdin.read()):
    try:
        packet = AlbaemPacket.validate_json(text)
        out.append([type(packet).__name__, packet.model_dump()])
    except Exception as exc:
        out.append(["invalid", type(exc).__name__])
print(json.dumps(out))
'''

# Messages whose verdict must be 0.2's: lax coercions it accepted and ones it refused.
EDGE_CASES = [
    '{"version": 1, "message_type": "series-start", "message_id": "4"}',
    '{"version": 1.0, "message_type": "series-end", "message_id": 5}',
    '{"version": true, "message_type": "series-start", "message_id": 1}',
    '{"version": 2, "message_type": "series-start", "message_id": 1}',
    '{"version": 1, "message_type": "data", "message_id": 2, "frame_number": 0, '
    '"timestamp": 1, "acquisition_timestamp": 5, "channel1": NaN}',
    '{"version": 1, "message_type": "data", "message_id": 2, "frame_number": 0, '
    '"timestamp": 1.5}',
    '{"version": 1, "message_type": "data", "message_id": 2, "frame_number": "x", '
    '"timestamp": 1.5, "acquisition_timestamp": 5}',
    '{"version": 1, "message_type": "heartbeat", "message_id": 2}',
]



def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture(scope="module")
def capture() -> list[list[bytes]]:
    return read_capture(CAPTURE)


def verdict(text: str | bytes) -> list[Any]:
    try:
        packet = AlbaemPacket.validate_json(text)
    except ValidationError as exc:
        return ["invalid", type(exc).__name__]
    return [type(packet).__name__, packet.model_dump()]


def framed_kind(frames: list[Any]) -> int | None:
    try:
        ((kind, out),) = AlbaemFramer().feed(frames)
    except FrameError:
        return None
    assert out is frames
    return kind


_KIND_OF = {"AlbaemStart": START, "AlbaemData": DATA, "AlbaemEnd": END, "invalid": None}


def test_models_and_framer_match_dranspose_02(capture: list[list[bytes]]) -> None:
    theirs = run_dr02(DR02_SCRIPT, CAPTURES / CAPTURE, stdin=json.dumps(EDGE_CASES))
    texts: list[bytes] = [m[0] for m in capture] + [e.encode() for e in EDGE_CASES]
    ours = json.loads(json.dumps([verdict(t) for t in texts]))  # NaN as 0.2's output has it
    assert ours == theirs
    assert [t[0] for t in theirs[:6]] == ["AlbaemStart"] + ["AlbaemData"] * 4 + ["AlbaemEnd"]
    # The framer forwards exactly what 0.2's ingester took, as the kind 0.2 saw.
    assert [framed_kind([zmq.Frame(t)]) for t in texts] == [_KIND_OF[t[0]] for t in theirs]


def test_capture_models(capture: list[list[bytes]]) -> None:
    start, *data, end = [AlbaemPacket.validate_json(m[0]) for m in capture]
    assert type(start) is AlbaemStart and start.message_id == 1
    assert all(type(d) is AlbaemData for d in data)
    assert [d.frame_number for d in data] == [0, 1, 2, 3]  # type: ignore[union-attr]
    assert data[0].channel3 == 2.5349278603830644e-10
    assert type(end) is AlbaemEnd and end.detector_specific["read_overflow"] is False


@pytest.mark.parametrize(("frames", "field"), [
    ([b"not json"], "frame 0"),
    ([b"[1]"], "frame 0"),
    ([dumps({"version": 1, "message_id": 1})], "'message_type'"),
    ([dumps({"version": 1, "message_id": 1, "message_type": "heartbeat"})], "'message_type'"),
    ([dumps({"version": 1, "message_id": 1, "message_type": ["data"]})], "'message_type'"),
    ([dumps({"version": 2, "message_id": 1, "message_type": "series-start"})], "'version'"),
    ([dumps({"version": 1, "message_type": "series-end"})], "'message_id'"),
    ([dumps({"version": 1, "message_id": 1, "message_type": "data", "frame_number": 0,
             "timestamp": "soon", "acquisition_timestamp": 1})], "'timestamp'"),
])
def test_framer_names_the_field(frames: list[bytes], field: str) -> None:
    with pytest.raises(FrameError) as info:
        AlbaemFramer().feed(frames)
    assert field in info.value.field


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=5), st.lists(st.integers(), max_size=2))
_VALID = {
    "version": 1, "message_id": 3, "message_type": "data", "frame_number": 1,
    "timestamp": 10.86, "acquisition_timestamp": 1704807773579624912, "channel1": -2.4e-11,
}
_messages = st.tuples(
    st.sampled_from(["series-start", "data", "series-end"]),
    st.dictionaries(st.sampled_from(list(_VALID)), st.sampled_from([1, 1.0, "1", True, 2])
                    | _values, max_size=2),
    st.sets(st.sampled_from(list(_VALID)), max_size=1),
).map(lambda t: {k: v for k, v in {**_VALID, "message_type": t[0], **t[1]}.items()
                 if k not in t[2]})


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_messages.map(msgspec.json.encode), st.binary(max_size=40)),
       st.lists(st.binary(max_size=8), max_size=2))
def test_fuzz_framer_agrees_with_the_models(first: bytes, more: list[bytes]) -> None:
    want = _KIND_OF[verdict(first)[0]]
    assert framed_kind([first, *more]) == want  # never another exception


# === the ingester on real sockets ===



def test_capture_streams_through_the_ingester(harness: Harness,
                                              capture: list[list[bytes]]) -> None:
    assert ingester_class("ZmqSubAlbaemIngester") is ZmqSubAlbaemIngester
    ing, got = stream_capture(harness, ZmqSubAlbaemIngester, capture, len(capture), ("em",))
    assert [e for e, _ in got] == list(range(len(capture)))
    for (_e, streams), sent in zip(got, capture, strict=True):
        assert streams["em"].typ == "albaem"
        assert [as_bytes(f) for f in streams["em"].frames] == sent
    c = wait_for(lambda: (c := ing.counter_values()).forwarded == 6 and c)
    assert c.malformed == 0
    assert isinstance(ing._streaming_albaem_settings, ZmqSubAlbaemSettings)


def test_malformed_messages_are_counted_and_the_series_goes_on(
    harness: Harness, capture: list[list[bytes]]
) -> None:
    start, data, end = capture[0], capture[1:5], capture[5]
    bad = [
        data[0],  # a reading before the series start
        [b"{not json"],
        [dumps({"version": 1, "message_id": 9, "message_type": "heartbeat"})],
        [dumps({"version": 1, "message_id": 9, "message_type": "data"})],  # fields missing
    ]
    messages = [*bad, start, data[0], [b"\xff"], data[1], data[2], start, data[3], end]
    ing, got = stream_capture(harness, ZmqSubAlbaemIngester, messages, 6, ("em",))
    assert [[as_bytes(f) for f in s["em"].frames] for _e, s in got] == capture
    # Four before the start, the junk inside the series and the second start.
    c = wait_for(lambda: (c := ing.counter_values()).malformed == 6 and c,
                 what="6 malformed messages")
    assert c.forwarded == 6


class SoftTriggered(ZmqSubAlbaemIngester):
    """A 0.2-style user subclass: the electrometer plus a software-triggered stream."""

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        if stream == "dummy":
            while True:
                await asyncio.sleep(0)
                yield IsSoftwareTriggered()
        async for item in super().run_source(stream):
            yield item

    def software_trigger(self) -> Iterator[dict[str, StreamData]]:
        k = 0
        while True:
            yield {"dummy": StreamData(typ="sw", frames=[b"%d" % k])}
            k += 1


def test_user_subclass_wraps_run_source(harness: Harness, capture: list[list[bytes]]) -> None:
    ing, got = stream_capture(harness, SoftTriggered, [capture[2], *capture], 6,
                              streams=("em", "dummy"))
    assert [[as_bytes(f) for f in s["em"].frames] for _e, s in got] == capture
    assert [as_bytes(s["dummy"].frames[0]) for _e, s in got] == [b"%d" % i for i in range(6)]
    assert ing.upstream_streams == []  # the generator path
    wait_for(lambda: ing.counter_values().malformed == 1, what="early reading counted")
