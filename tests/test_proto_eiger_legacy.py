"""DECTRIS Eiger legacy stream: the parser against dranspose 0.2's on a real capture, the
PULL ingester on real sockets (capture streamed in, events out to DEALER workers), bad input.

The 0.2 comparison runs 0.2's ``parse`` in its own venv (``DRANSPOSE02_PYTHON``); without it
those tests skip, under ``CI=true`` they fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dranspose_fast.data.eiger_legacy import (
    EigerLegacyDecodeError,
    EigerLegacyEnd,
    EigerLegacyHeader,
    EigerLegacyImage,
    EigerLegacyPacket,
)
from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData
from dranspose_fast.ingester import IsSoftwareTriggered
from dranspose_fast.ingester.framing import DATA, END, START, FrameError
from dranspose_fast.ingesters import ingester_class
from dranspose_fast.ingesters.zmqpull_eiger_legacy import (
    EigerLegacyFramer,
    ZmqPullEigerLegacyIngester,
    ZmqPullEigerLegacySettings,
)
from dranspose_fast.middlewares.eiger_legacy import parse
from dranspose_fast.protocol import StreamName
from tests.captures import CAPTURES, read_capture
from tests.compat.dr02 import run_dr02
from tests.ingester_harness import Harness, as_bytes, harness, wait_for  # noqa: F401
from tests.protocol_harness import stream_capture

CAPTURE = "eiger-small.cbors"

# Run by both pythons: one JSON-able summary per parsed packet (buffers as length + digest).
SUMMARY = r'''
import hashlib

def jsonable(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return {"nbytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value

def summarize(packet):
    fields = dict(packet.__dict__)
    fields.update(packet.__pydantic_extra__ or {})
    return {"class": type(packet).__name__, "fields": jsonable(fields)}
'''

DR02_SCRIPT = SUMMARY + r'''
import json, sys
import cbor2
from dranspose.event import StreamData
from dranspose.middlewares.eiger_legacy import parse

out = []
with open(sys.argv[1], "rb") as fh:
    size = fh.seek(0, 2)
    fh.seek(0)
    while fh.tell() < size:
        frames = [bytes(f) for f in cbor2.load(fh)]
        out.append(summarize(parse(StreamData(typ="EIGER_LEGACY", frames=frames))))
print(json.dumps(out))
'''

_ns: dict[str, Any] = {}
exec(SUMMARY, _ns)  # our own constant: the same summary on both sides
summarize = _ns["summarize"]



def sd(frames: list[Any]) -> StreamData:
    return StreamData(typ="EIGER_LEGACY", frames=frames)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture(scope="module")
def capture() -> list[list[bytes]]:
    return read_capture(CAPTURE)


# === parse against 0.2 ===


def test_parse_matches_dranspose_02_on_the_capture(capture: list[list[bytes]]) -> None:
    theirs = run_dr02(DR02_SCRIPT, CAPTURES / CAPTURE)
    # Live (zmq.Frame) and replayed (bytes) frames parse alike.
    for frames in ([[zmq.Frame(f) for f in m] for m in capture], capture):
        ours = [summarize(parse(sd(m))) for m in frames]
        assert ours == theirs
    assert [t["class"] for t in theirs] == ["EigerLegacyHeader"] + ["EigerLegacyImage"] * 3 + [
        "EigerLegacyEnd"]


def test_parse_reads_the_capture(capture: list[list[bytes]]) -> None:
    header = parse(sd(capture[0]))
    assert isinstance(header, EigerLegacyHeader)
    assert header.series == 6 and header.info["nimages"] == 3
    assert header.appendix["collect_dict"]["col_id"] == 128579
    frames = [zmq.Frame(f) for f in capture[1]]
    image = parse(sd(frames))
    assert isinstance(image, EigerLegacyImage)
    assert image.frame == 0 and image.data["shape"] == [3108, 3262]
    assert image.config["real_time"] == 9999900
    buf = image.data["buffer"]
    assert isinstance(buf, memoryview) and buf.readonly and buf == capture[1][2]
    # Zero copy: the buffer is the received frame's memory.
    assert np.shares_memory(np.frombuffer(buf, np.uint8), np.frombuffer(frames[2], np.uint8))
    assert image.array is None  # bslz4: compressed, buffer only
    # 0.2's field order in dumps; packets compare as 0.2's do.
    assert list(image.model_dump())[:2] == ["htype", "frame"]
    assert image == parse(sd(capture[1]))
    assert isinstance(parse(sd(capture[4])), EigerLegacyEnd)


def image_message(payload: bytes, shape: list[int], typ: str = "uint16", encoding: str = "<",
                  frame: Any = 7, **extra: Any) -> list[bytes]:
    desc = {"htype": "dimage_d-1.0", "shape": shape, "type": typ, "encoding": encoding,
            "size": len(payload), **extra}
    return [dumps({"htype": "dimage-1.0", "frame": frame, "series": 1}), dumps(desc), payload,
            dumps({"htype": "dconfig-1.0", "real_time": 1}), b"{}"]


@pytest.mark.parametrize("encoding", ["<", ">"])
def test_uncompressed_image_is_a_numpy_view(encoding: str) -> None:
    want = np.arange(6, dtype=f"{encoding}u2").reshape(2, 3)  # DECTRIS shape is [x, y]
    frames = image_message(want.tobytes(), [3, 2], encoding=encoding)
    zframes = [zmq.Frame(f) for f in frames]
    image = parse(sd(zframes))
    assert isinstance(image, EigerLegacyImage)
    arr = image.array
    assert arr is not None and arr.shape == (2, 3) and not arr.flags.writeable
    assert (arr == want).all()
    assert np.shares_memory(arr, np.frombuffer(zframes[2], np.uint8))
    assert "array" not in image.model_dump()  # an addition, not one of 0.2's fields
    assert parse(sd(frames[:4])).frame == 7  # no image appendix: 4 parts


@pytest.mark.parametrize(("mangle", "words"), [
    ({"shape": [4, 2]}, ["part 2", "'shape'"]),
    ({"shape": [3, -2]}, ["part 2", "'shape'"]),
    ({"shape": "3x2"}, ["part 2", "'shape'"]),
    ({"type": "object"}, ["part 2", "'type'"]),
    ({"type": "no-such-type"}, ["part 2", "'type'"]),
    ({"type": 5}, ["part 2", "'type'"]),
    ({"size": 11}, ["part 2", "'size'"]),
])
def test_uncompressed_image_size_checks(mangle: dict[str, Any], words: list[str]) -> None:
    frames = image_message(bytes(12), [3, 2])
    desc = {**json.loads(frames[1]), **mangle}
    frames[1] = dumps(desc)
    with pytest.raises(EigerLegacyDecodeError) as info:
        parse(sd(frames))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(("frames", "words"), [
    ([b"not json"], ["part 1", "JSON"]),
    ([b"[1, 2]"], ["part 1", "object"]),
    ([dumps({"frame": 1})], ["part 1", "'htype'"]),
    ([dumps({"htype": "dimage-2.0"})], ["'htype'", "dimage-2.0"]),
    ([dumps({"htype": "dimage-1.0", "frame": "x"}), b"{}", b"", b"{}"], ["part 1", "'frame'"]),
    ([dumps({"htype": "dimage-1.0", "frame": 1}), b"{}", b""], ["image", "3 parts"]),
    ([dumps({"htype": "dimage-1.0", "frame": 1}), b"[]", b"", b"{}"], ["part 2", "object"]),
    ([dumps({"htype": "dimage-1.0", "frame": 1}), b"{}", b"", b"{"], ["part 4", "JSON"]),
    ([dumps({"htype": "dheader-1.0", "header_detail": "all"})] + [b"{}"] * 4,
     ["header", "5 parts", "9"]),
    ([dumps({"htype": "dheader-1.0"}), b"{}"], ["header", "2 parts", "9"]),
    ([dumps({"htype": "dheader-1.0", "header_detail": "all"})] + [b"{}"] * 7 + [b"x"],
     ["part 9", "appendix"]),
])
def test_bad_messages_raise_decode_errors_naming_the_part(frames: list[bytes],
                                                           words: list[str]) -> None:
    with pytest.raises(EigerLegacyDecodeError) as info:
        parse(sd(frames))
    for word in words:
        assert word in str(info.value), str(info.value)


def test_typ_and_lax_fields_as_in_02() -> None:
    with pytest.raises(EigerLegacyDecodeError, match="EIGER_LEGACY"):
        parse(StreamData(typ="STINS", frames=[b"{}"]))
    frames = image_message(b"xy", [1], typ="uint16", encoding="bs16-lz4<", frame="3")
    image = parse(sd(frames))
    assert isinstance(image, EigerLegacyImage) and image.frame == 3  # 0.2 coerced "3" too
    assert image.data["buffer"] == b"xy" and image.array is None
    # The shorter header forms of the DECTRIS interface.
    basic = parse(sd([dumps({"htype": "dheader-1.0", "header_detail": "basic"}),
                      dumps({"nimages": 2}), dumps({"a": 1})]))
    assert isinstance(basic, EigerLegacyHeader)
    assert basic.info == {"nimages": 2} and basic.appendix == {"a": 1}
    none = parse(sd([dumps({"htype": "dheader-1.0", "header_detail": "none"})]))
    assert isinstance(none, EigerLegacyHeader) and none.info is None and none.appendix is None
    nan = parse(sd([dumps({"htype": "dheader-1.0", "header_detail": "none"}), b"[NaN]"]))
    assert isinstance(nan, EigerLegacyHeader) and np.isnan(nan.appendix[0])  # json.loads reads it
    assert EigerLegacyPacket.validate_json(b'{"htype": "dseries_end-1.0"}').htype.endswith("1.0")


# === fuzz ===

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=12,
)
_heads = st.fixed_dictionaries(
    {"htype": st.sampled_from(["dheader-1.0", "dimage-1.0", "dseries_end-1.0", "x", 3])},
    optional={
        "frame": st.one_of(st.integers(), st.text(max_size=3), st.none()),
        "header_detail": st.sampled_from(["all", "basic", "none", "other", 1]),
    },
)
_descs = st.fixed_dictionaries({}, optional={
    "shape": st.one_of(st.lists(st.integers(-2, 2**40), max_size=3), _json_values),
    "type": st.sampled_from(["uint8", "uint16", "float32", "int64", "S3", "object", "O", "x",
                             "bool", "c8", "V4"]) | _json_values,
    "encoding": st.sampled_from(["<", ">", "bs32-lz4<", "lz4<", "", None]),
    "size": st.integers(-1, 64) | _json_values,
})
_parts = st.one_of(
    st.binary(max_size=64),
    _json_values.map(lambda v: msgspec.json.encode(v)),
    _descs.map(lambda v: msgspec.json.encode(v)),
)
_messages = st.tuples(
    st.one_of(_heads.map(lambda v: msgspec.json.encode(v)), st.binary(max_size=40)),
    st.lists(_parts, max_size=9),
).map(lambda t: [t[0], *t[1]])


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_messages)
def test_fuzz_parse_and_framer(frames: list[bytes]) -> None:
    try:
        packet = parse(sd(frames))
    except EigerLegacyDecodeError as exc:
        assert isinstance(exc, DecodeError) and str(exc)
        packet = None
    framer = EigerLegacyFramer()
    try:
        framed = framer.feed(frames)
    except FrameError as exc:
        assert exc.field and exc.problem
        framed = None
    if framed is not None:
        ((kind, out),) = framed
        assert out is frames and kind in (START, DATA, END)
    if packet is not None:
        # What parse reads, the framer forwards (the converse does not hold: it never reads
        # parts 2 to 9).
        assert framed is not None
        want = {EigerLegacyHeader: START, EigerLegacyImage: DATA, EigerLegacyEnd: END}
        assert framed[0][0] == want[type(packet)]


@st.composite
def _consistent(draw: st.DrawFn) -> tuple[int, dict[str, Any], bytes, bool]:
    """A valid uncompressed image, sometimes off by a little."""
    typ = draw(st.sampled_from(["uint8", "uint16", "int32", "float32", "float64"]))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    nbytes = int(np.prod(shape)) * np.dtype(typ).itemsize + draw(st.sampled_from([0, 0, 0, 1]))
    desc = {"shape": shape, "type": typ, "encoding": draw(st.sampled_from(["<", ">"]))}
    if draw(st.booleans()):
        desc["size"] = nbytes + draw(st.sampled_from([0, 0, -1]))
    return 0, desc, draw(st.binary(min_size=nbytes, max_size=nbytes)), draw(st.booleans())


_images = st.one_of(st.tuples(
    st.integers(0, 5),
    _descs,
    st.binary(max_size=48),
    st.booleans(),
), _consistent()).map(lambda t: [dumps({"htype": "dimage-1.0", "frame": t[0]}),
                                 msgspec.json.encode(t[1]), t[2], b"{}",
                                 *([b"{}"] if t[3] else [])])


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_images)
def test_fuzz_image_descriptions(frames: list[bytes]) -> None:
    try:
        image = parse(sd(frames))
    except EigerLegacyDecodeError as exc:
        assert "part 2" in str(exc)  # only the data description can be wrong here
        return
    assert isinstance(image, EigerLegacyImage) and image.data["buffer"] == frames[2]
    arr = image.array
    if arr is not None:
        desc = json.loads(frames[1])
        assert desc["encoding"] in ("<", ">") and arr.nbytes == len(frames[2])
        assert list(arr.shape) == desc["shape"][::-1]


def test_framer_classifies_the_capture(capture: list[list[bytes]]) -> None:
    framer = EigerLegacyFramer()
    kinds = [k for m in capture for k, _ in framer.feed([zmq.Frame(f) for f in m])]
    assert kinds == [START, DATA, DATA, DATA, END]
    assert EigerLegacyFramer.typ == "EIGER_LEGACY"


# === the ingester on real sockets ===



def test_capture_streams_through_the_ingester(harness: Harness,
                                              capture: list[list[bytes]]) -> None:
    assert ingester_class("ZmqPullEigerLegacyIngester") is ZmqPullEigerLegacyIngester
    ing, got = stream_capture(harness, ZmqPullEigerLegacyIngester, capture, len(capture),
                              ("eiger",), socket="PUSH")
    assert [e for e, _ in got] == list(range(len(capture)))
    for (_e, streams), sent in zip(got, capture, strict=True):
        assert streams["eiger"].typ == "EIGER_LEGACY"
        assert [as_bytes(f) for f in streams["eiger"].frames] == sent
    parsed = [parse(s["eiger"]) for _e, s in got]
    assert [type(p) for p in parsed] == [EigerLegacyHeader] + [EigerLegacyImage] * 3 + [
        EigerLegacyEnd]
    c = wait_for(lambda: (c := ing.counter_values()).forwarded == 5 and c)
    assert c.malformed == 0
    assert isinstance(ing._streaming_eiger_legacy_settings, ZmqPullEigerLegacySettings)


def test_malformed_messages_are_counted_and_the_series_goes_on(
    harness: Harness, capture: list[list[bytes]]
) -> None:
    header, images, end = capture[0], capture[1:4], capture[4]
    bad = [
        images[0],  # an image before its header
        [b"not json", b"x"],
        header[:5],  # a header of 5 parts
        [dumps({"htype": "dnothing-1.0"})],  # unknown htype
        [dumps({"htype": "dimage-1.0"}), b"{}", b"", b"{}"],  # no frame number
    ]
    messages = [*bad, header, images[0], [b"{"], images[1][:3], images[1], images[2], end]
    ing, got = stream_capture(harness, ZmqPullEigerLegacyIngester, messages, 5, ("eiger",),
                              socket="PUSH")
    want = [header, images[0], images[1], images[2], end]
    assert [[as_bytes(f) for f in s["eiger"].frames] for _e, s in got] == want
    c = wait_for(lambda: (c := ing.counter_values()).malformed == 7 and c,
                 what="7 malformed messages")
    assert c.forwarded == 5


class SoftTriggered(ZmqPullEigerLegacyIngester):
    """A 0.2-style user subclass: the Eiger stream plus a software-triggered one."""

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
    ing, got = stream_capture(harness, SoftTriggered, [capture[1], *capture], 5,
                              streams=("eiger", "dummy"), socket="PUSH")
    assert [[as_bytes(f) for f in s["eiger"].frames] for _e, s in got] == capture
    assert [as_bytes(s["dummy"].frames[0]) for _e, s in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert ing.upstream_streams == []  # the generator path
    wait_for(lambda: ing.counter_values().malformed == 1, what="early image counted")

