"""Xspress3: the models, the parser, the framer and the SUB ingester, on the recorded capture.

``tests/data/captures/xspress3-dump.cbors`` is the legacy form (a header message, 20 images as
three single-part messages each, an end message).  The comparison with dranspose 0.2's own
parser runs in its venv (``DRANSPOSE02_PYTHON``; under ``CI=true`` a missing venv fails).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dranspose_fast.data.xspress3 import (
    XspressDecodeError,
    XspressEnd,
    XspressImage,
    XspressPacket,
    XspressStart,
)
from dranspose_fast.event import StreamData
from dranspose_fast.ingester import IsSoftwareTriggered
from dranspose_fast.ingester.framing import DATA, END, START, FrameError
from dranspose_fast.ingesters import ingester_class, settings_class
from dranspose_fast.ingesters.zmqsub_xspress3 import (
    XspressFramer,
    ZmqSubXspressIngester,
    ZmqSubXspressSettings,
)
from dranspose_fast.middlewares.xspress import parse
from dranspose_fast.protocol import StreamName
from tests.captures import CAPTURES, CaptureSender, read_capture
from tests.compat.dr02 import dr02_output, dr02_python, run_dr02, spawn_dr02
from tests.ingester_harness import (  # noqa: F401 (fixtures)
    Harness,
    as_bytes,
    harness,
    wait_for,
)
from tests.protocol_harness import stream_capture

CAPTURE = "xspress3-dump.cbors"
N_IMAGES = 20


@pytest.fixture(scope="module")
def capture() -> list[list[bytes]]:
    messages = read_capture(CAPTURE)
    assert len(messages) == 2 + 3 * N_IMAGES
    return messages


def three_part(capture: list[list[bytes]]) -> list[list[bytes]]:
    """The capture in the new form: one three-part message per image."""
    out = [capture[0]]
    for i in range(N_IMAGES):
        a, b, c = capture[1 + 3 * i: 4 + 3 * i]
        out.append(a + b + c)
    out.append(capture[-1])
    return out


def sd(frames: list[Any]) -> StreamData:
    return StreamData(typ="xspress", frames=frames)


def head(frames: list[Any]) -> dict[str, Any]:
    return json.loads(as_bytes(frames[0]))  # type: ignore[no-any-return]


# === parser ===


@pytest.mark.parametrize("as_frames", [False, True])
def test_parse_every_message_of_the_capture(capture: list[list[bytes]], as_frames: bool) -> None:
    messages = three_part(capture)
    if as_frames:
        messages = [[zmq.Frame(f) for f in m] for m in messages]
    start = parse(sd(messages[0]))
    assert isinstance(start, XspressStart)
    assert start.filename.endswith("scan_000002_xspress3.hdf5")
    assert start.overwritable is False  # type: ignore[attr-defined]  # an extra field
    for i, msg in enumerate(messages[1:-1]):
        img = parse(sd(msg))
        assert isinstance(img, XspressImage)
        assert (img.frame, img.shape, img.type, img.compression) == (i, [4, 4096], "uint32",
                                                                   "none")
        assert img.exptime == pytest.approx(0.099999875)
        data = img.data  # type: ignore[attr-defined]
        assert data.shape == (4, 4096) and data.dtype == np.uint32
        # A view of the received frame, not a copy.
        raw = msg[1].buffer if as_frames else msg[1]
        assert not data.flags.owndata
        assert np.shares_memory(data, np.frombuffer(raw, np.uint8))
        np.testing.assert_array_equal(data.ravel(), np.frombuffer(as_bytes(msg[1]), "<u4"))
        meta = img.meta  # type: ignore[attr-defined]
        assert list(meta) == ["ocr", "AllEvents", "AllGood", "ClockTicks", "TotalTicks",
                              "ResetTicks", "event_widths", "dtc"]
        for got, want in zip(meta.values(), pickle.loads(as_bytes(msg[2])), strict=True):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
    assert isinstance(parse(sd(messages[-1])), XspressEnd)


def test_parse_round_trips_through_to_stream_data(capture: list[list[bytes]]) -> None:
    for msg in three_part(capture):
        first = parse(sd(msg))
        again = parse(first.to_stream_data())
        assert type(again) is type(first)
        assert again.model_dump(exclude={"data", "meta"}) == first.model_dump(
            exclude={"data", "meta"})
        if isinstance(first, XspressImage):
            np.testing.assert_array_equal(again.data, first.data)  # type: ignore[attr-defined]
            assert list(again.meta) == list(first.meta)  # type: ignore[attr-defined]
    # The same field order and extras as pydantic validation gives (0.2's models).
    for msg in (capture[0], capture[1] + capture[2] + capture[3], capture[-1]):
        ours = parse(sd(msg)).model_dump_json(exclude={"data", "meta"})
        assert ours == XspressPacket.validate_json(msg[0]).model_dump_json()


def test_parse_is_as_lax_as_pydantic_on_header_fields(capture: list[list[bytes]]) -> None:
    data, meta = capture[2][0], capture[3][0]
    # Coercible values (what 0.2's validation accepted), missing optional fields: defaults.
    loose = {"htype": "image", "frame": "3", "shape": ["4", 4096], "type": "uint32"}
    img = parse(sd([json.dumps(loose).encode(), data, meta]))
    assert isinstance(img, XspressImage)
    assert (img.frame, img.shape, img.exptime, img.compression) == (3, [4, 4096], 1, "none")
    assert img.data.shape == (4, 4096)  # type: ignore[attr-defined]
    intexp = {"htype": "image", "frame": 1, "shape": [4, 4096], "type": "uint32", "exptime": 2,
              "compression": None, "extra": [1, 2]}
    img = parse(sd([json.dumps(intexp).encode(), data, meta]))
    assert type(img.exptime) is float and img.compression is None  # type: ignore[union-attr]
    assert img.extra == [1, 2]  # type: ignore[union-attr]


def _unsafe_pickle() -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo pwned",))

    return pickle.dumps([Evil()])


@pytest.mark.parametrize(("frames", "field", "words"), [
    ([], "frames", "no frames"),
    ([b"{not json"], "header", "not valid JSON"),
    ([b"[1, 2]"], "header", "JSON list"),
    ([b'{"filename": "x"}'], "htype", "no 'htype'"),
    ([b'{"htype": "dimage"}'], "htype", "'dimage'"),
    ([b'{"htype": "header"}'], "filename", "filename"),
    ([b'{"htype": "image", "frame": 0, "shape": [4, 4096], "type": "uint32"}', b"x"],
     "frames", "expected 3 frames"),
    ([b'{"htype": "image", "frame": 0, "shape": [4, 4096], "type": "uint32"}', b"x" * 100,
      b""], "data", "needs 65536 bytes"),
    ([b'{"htype": "image", "frame": 0, "shape": [4, -1], "type": "uint32"}', b"", b""],
     "shape", "negative"),
    ([b'{"htype": "image", "frame": 0, "shape": [4], "type": "object"}', b"", b""],
     "type", "not a plain"),
    ([b'{"htype": "image", "frame": 0, "shape": [4], "type": "nonsense"}', b"", b""],
     "type", "no numpy dtype"),
    ([b'{"htype": "image", "frame": "x", "shape": [4], "type": "u1"}', b"1234", b""],
     "frame", "frame"),
    ([b'{"htype": "image", "frame": 0, "shape": [4], "type": "u1"}', b"1234", b"garbage"],
     "meta", "not a valid pickle"),
    ([b'{"htype": "image", "frame": 0, "shape": [4], "type": "u1"}', b"1234",
      pickle.dumps({"ocr": 1})], "meta", "pickled dict"),
    ([b'{"htype": "image", "frame": 0, "shape": [4], "type": "u1"}', b"1234",
      _unsafe_pickle()], "meta", "posix.system"),
])
def test_parse_names_what_is_wrong(frames: list[bytes], field: str, words: str) -> None:
    with pytest.raises(XspressDecodeError) as info:
        parse(sd(frames))
    assert info.value.field == field
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_refuses_other_typs(capture: list[list[bytes]]) -> None:
    with pytest.raises(XspressDecodeError, match="typ 'STINS'"):
        parse(StreamData(typ="STINS", frames=capture[0]))


# === the comparison with dranspose 0.2's parser ===

DR02_SCRIPT = '''
import contextlib, io, json, sys
import cbor2, numpy as np, zmq
from dranspose.event import StreamData
from dranspose.middlewares.xspress import parse
msgs = []
with open(sys.argv[1], "rb") as fh:
    while True:
        try:
            msgs.append(cbor2.load(fh))
        except (cbor2.CBORDecodeEOF, EOFError):
            break
def summary(p):
    fields = json.loads(p.model_dump_json(exclude={"data", "meta"}))
    out = {"cls": type(p).__name__, "fields": fields}
    if hasattr(p, "data"):
        out["data"] = [list(p.data.shape), str(p.data.dtype), int(p.data.sum()),
                       [int(x) for x in p.data.sum(axis=1)]]
        out["meta"] = {k: [str(v.dtype), v.tolist()] for k, v in p.meta.items()}
    return out
events = [msgs[0]] + [msgs[i] + msgs[i + 1] + msgs[i + 2] for i in range(1, len(msgs) - 1, 3)]
events.append(msgs[-1])
res = []
for frames in events:
    for as_frames in (False, True):
        data = StreamData(typ="xspress",
                          frames=[zmq.Frame(f) for f in frames] if as_frames else frames)
        with contextlib.redirect_stdout(io.StringIO()):  # 0.2's parse prints every packet
            res.append(summary(parse(data)))
print(json.dumps(res))
'''


def _summary(p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cls": type(p).__name__,
                           "fields": json.loads(p.model_dump_json(exclude={"data", "meta"}))}
    if isinstance(p, XspressImage):
        data = p.data  # type: ignore[attr-defined]
        out["data"] = [list(data.shape), str(data.dtype), int(data.sum()),
                       [int(x) for x in data.sum(axis=1)]]
        out["meta"] = {k: [str(v.dtype), v.tolist()]
                       for k, v in p.meta.items()}  # type: ignore[attr-defined]
    return out


@pytest.fixture(scope="module")
def dr02() -> str:
    """The python of the dranspose 0.2.0 venv; skipped without it, failed under CI=true."""
    return dr02_python()


def test_parse_matches_dranspose_02_field_by_field(
    capture: list[list[bytes]], dr02: str, tmp_path: Path
) -> None:
    theirs = run_dr02(DR02_SCRIPT, CAPTURES / CAPTURE)
    ours = []
    for frames in three_part(capture):
        ours.append(_summary(parse(sd(frames))))
        ours.append(_summary(parse(sd([zmq.Frame(f) for f in frames]))))
    assert len(ours) == len(theirs) == 2 * (N_IMAGES + 2)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"message {i // 2}"
    assert theirs[2]["data"][2] > 0  # the capture has counts: the sums compare something


DR02_DUMP_SCRIPT = '''
import contextlib, io, json, sys
from dranspose.middlewares.xspress import parse
from dranspose.replay import get_internals
res = []
for msg in get_internals(sys.argv[1]):
    data = msg.streams["xsp"]
    with contextlib.redirect_stdout(io.StringIO()):
        p = parse(data)
    out = {"event": msg.event_number, "cls": type(p).__name__, "frames": data.length}
    if hasattr(p, "data"):
        out["sum"] = int(p.data.sum())
        out["dtc"] = p.meta["dtc"].tolist()
    res.append(out)
print(json.dumps(res))
'''


DR02_INGEST_SCRIPT = '''
import asyncio, sys
import zmq.asyncio
from dranspose.event import InternalWorkerMessage
from dranspose.ingester import Dumper
from dranspose.ingesters.zmqsub_xspress3 import ZmqSubXspressIngester, ZmqSubXspressSettings
url, path = sys.argv[1], sys.argv[2]
async def main():
    ing = ZmqSubXspressIngester(ZmqSubXspressSettings(
        upstream_url=url, ingester_streams=["xsp"], ingester_url="tcp://127.0.0.1:1",
        build_meta_file=None))
    ing.ctx = zmq.asyncio.Context()
    dumper = Dumper(path)
    n = 0
    async for data in ing.run_source("xsp"):
        dumper.write_dump(InternalWorkerMessage(event_number=n, streams={"xsp": data.get_bytes()}))
        n += 1
        if data.length == 1 and b"series_end" in data.frames[0].bytes:
            break
    dumper.close()
    await ing.stop_source("xsp")
    print(n)
asyncio.run(main())
'''


# === framer ===


def test_framer_joins_legacy_images_and_passes_multipart_ones(
    capture: list[list[bytes]],
) -> None:
    for messages in (capture, three_part(capture)):
        framer = XspressFramer()
        out = [m for frames in messages for m in framer.feed(frames)]
        assert [k for k, _ in out] == [START] + [DATA] * N_IMAGES + [END]
        assert [len(f) for _, f in out] == [1] + [3] * N_IMAGES + [1]
        assert [head(f)["frame"] for _, f in out[1:-1]] == list(range(N_IMAGES))
        data = messages[2][0] if len(messages[1]) == 1 else messages[1][1]
        assert out[1][1][1] is data  # the received frame itself, not a copy


def test_framer_drops_an_image_that_lost_a_part(capture: list[list[bytes]]) -> None:
    img = [capture[1 + 3 * i: 4 + 3 * i] for i in range(3)]
    framer = XspressFramer()
    assert framer.feed(capture[0])[0][0] == START
    # Image 0 lost its data message: image 1's header arrives instead; image 1 survives.
    framer.feed(img[0][0])
    with pytest.raises(FrameError) as info:
        framer.feed(img[1][0])
    assert info.value.field == "data" and "next image" in str(info.value)
    assert framer.feed(img[1][1]) == ()
    (kind, frames), = framer.feed(img[1][2])
    assert kind == DATA and head(frames)["frame"] == 1
    # Image 2 lost its meta message: the end arrives instead, both are dropped.
    framer.feed(img[2][0])
    framer.feed(img[2][1])
    with pytest.raises(FrameError) as info:
        framer.feed(capture[-1])
    assert info.value.field == "meta" and "'series_end' message" in str(info.value)
    # Spectra of the wrong size in the data slot.
    framer.feed(img[2][0])
    with pytest.raises(FrameError, match="65536-byte spectra") as info:
        framer.feed([b"\0" * 10])
    assert info.value.field == "data"
    # reset() forgets a partial image.
    framer.feed(img[0][0])
    framer.reset()
    assert framer.feed(capture[-1])[0][0] == END


@pytest.mark.parametrize(("frames", "field"), [
    ([b"\x80\x03garbage"], "header"),
    ([b'{"htype": "dimage"}'], "htype"),
    ([b'{"htype": "series_end"}', b"x"], "frames"),
    ([b'{"htype": "image", "frame": 0, "shape": [4], "type": "u1"}', b"1234"], "frames"),
    ([b'{"htype": "image", "frame": 0, "shape": [4], "type": "u1"}', b"123", b""], "data"),
    ([b'{"htype": "image", "frame": 0, "shape": [4], "type": "u8x"}'], "type"),
    ([], "frames"),
])
def test_framer_names_the_field(frames: list[bytes], field: str) -> None:
    with pytest.raises(FrameError) as info:
        XspressFramer().feed(frames)
    assert info.value.field == field


# === fuzzing ===

_CAPTURE = read_capture(CAPTURE)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8)
_headers = st.fixed_dictionaries(
    {"htype": st.sampled_from(["header", "image", "series_end", "x"]) | _json_values},
    optional={"frame": _json_values | st.integers(), "filename": _json_values | st.text(),
              "shape": st.lists(st.integers(-2, 70), max_size=3) | _json_values,
              "type": st.sampled_from(["uint32", "u1", "<f8", "object", "V0", "x"]) | st.text(),
              "exptime": _json_values, "compression": _json_values, "other": _json_values})
_header_bytes = _headers.map(lambda h: json.dumps(h).encode()) | st.binary(max_size=40)
_pieces = st.sampled_from([f for m in _CAPTURE[:4] + _CAPTURE[-1:] for f in m])
_frame = _header_bytes | st.binary(max_size=300) | _pieces | st.sampled_from(
    [pickle.dumps([np.arange(4)]), pickle.dumps((1, 2)), pickle.dumps(None)])
_fuzz = settings(deadline=None, max_examples=200,
                 suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.lists(_frame, max_size=4))
def test_fuzz_parse_raises_only_decode_errors(frames: list[bytes]) -> None:
    try:
        packet = parse(sd(frames))
    except XspressDecodeError as exc:
        assert exc.field
        return
    assert isinstance(packet, XspressStart | XspressImage | XspressEnd)
    if isinstance(packet, XspressImage):
        assert packet.data.nbytes == len(frames[1])  # type: ignore[attr-defined]


@_fuzz
@given(st.lists(st.lists(_frame, min_size=1, max_size=4), max_size=8))
def test_fuzz_framer_raises_only_frame_errors_and_recovers(
    messages: list[list[bytes]],
) -> None:
    framer = XspressFramer()
    for frames in messages:
        try:
            out = framer.feed(frames)
        except FrameError as exc:
            assert exc.field
            continue
        for kind, framed in out:
            if kind == DATA:  # what the framer lets through, the parser reads (the pickle aside)
                try:
                    assert isinstance(parse(sd(framed)), XspressImage)
                except XspressDecodeError as exc:
                    assert exc.field == "meta"
    framer.reset()
    out = [m for frames in _CAPTURE[:7] + _CAPTURE[-1:] for m in framer.feed(frames)]
    assert [k for k, _ in out] == [START, DATA, DATA, END]


# === the ingester, over real sockets ===



def _check_series(got: list[tuple[int, dict[str, Any]]]) -> None:
    assert [e for e, _ in got] == list(range(N_IMAGES + 2))
    streams = [s["xsp"] for _, s in got]
    assert all(s.typ == "xspress" for s in streams)
    assert [len(s.frames) for s in streams] == [1] + [3] * N_IMAGES + [1]
    packets = [parse(s) for s in streams]
    assert isinstance(packets[0], XspressStart) and isinstance(packets[-1], XspressEnd)
    assert [p.frame for p in packets[1:-1]] == list(range(N_IMAGES))  # type: ignore[union-attr]
    assert all(p.data.shape == (4, 4096) for p in packets[1:-1])  # type: ignore[union-attr]


@pytest.mark.parametrize("form", ["legacy", "multipart"])
def test_ingester_forwards_the_capture(harness: Harness, capture: list[list[bytes]],
                                       form: str) -> None:
    messages = capture if form == "legacy" else three_part(capture)
    got = stream_capture(harness, ZmqSubXspressIngester, messages, N_IMAGES + 2,
                         ["xsp"], exact=True)[1]
    _check_series(got)
    ing = harness.ingesters[-1]
    c = wait_for(lambda: (c := ing.counter_values()).forwarded == N_IMAGES + 2 and c)
    assert c.malformed == 0 and c.discarded_outside_scan == 0


def test_ingester_counts_malformed_messages_and_goes_on(
    harness: Harness, capture: list[list[bytes]], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dranspose_fast")
    img = [capture[1 + 3 * i: 4 + 3 * i] for i in range(N_IMAGES)]
    bad_size = [img[5][0][0], b"\0" * 12, img[5][2][0]]
    messages = (
        img[0]  # an image before the header: 1 malformed
        + [[b"not json"], capture[0], [b"{broken"]]  # 1 malformed before, 1 in the series
        + img[0] + img[1]
        + [[b'{"htype": "rubbish"}'], [capture[-1][0], b"extra frame"], bad_size]  # 3
        + img[2][:1] + img[3]  # image 2 lost data and meta: 1; image 3 survives
        + img[4] + [capture[-1]] + img[6]  # after the end: discarded outside the scan
    )
    got = stream_capture(harness, ZmqSubXspressIngester, messages, 6, ["xsp"], exact=True)[1]
    streams = [s["xsp"] for _, s in got]
    kinds = [head(s.frames)["htype"] for s in streams]
    assert kinds == ["header", "image", "image", "image", "image", "series_end"]
    assert [head(s.frames)["frame"] for s in streams[1:-1]] == [0, 1, 3, 4]
    ing = harness.ingesters[-1]
    c = wait_for(lambda: (c := ing.counter_values()).discarded_outside_scan == 1 and c,
                 what="the image after the end discarded")
    assert c.malformed == 7
    assert c.forwarded == 6
    # One line for the first (the rest within the rate limit): stream, message number, problem.
    lines = [r.getMessage() for r in caplog.records if "dropped message" in r.getMessage()]
    assert lines[0] == ("stream xsp: dropped message 3: data before its series start "
                        "(1 dropped since the last line)")


class WrappingIngester(ZmqSubXspressIngester):
    """A 0.2-style user subclass: wraps the built-in generator, counting what passes."""

    passed = 0

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        async for data in super().run_source(stream):
            await asyncio.sleep(0)
            WrappingIngester.passed += 1
            yield data


def test_user_subclass_wrapping_run_source(harness: Harness, capture: list[list[bytes]]) -> None:
    WrappingIngester.passed = 0
    got = stream_capture(harness, WrappingIngester, capture, N_IMAGES + 2, ["xsp"], exact=True)[1]
    _check_series(got)
    assert WrappingIngester.passed == N_IMAGES + 2
    ing = harness.ingesters[-1]
    assert ing._streaming_xspress_settings.upstream_url is not None
    assert ingester_class("ZmqSubXspressIngester") is ZmqSubXspressIngester
    assert ZmqSubXspressIngester.settings_class is ZmqSubXspressSettings


def test_settings_from_the_environment_as_in_02(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_URL", "tcp://127.0.0.1:9999")
    monkeypatch.setenv("INGESTER_STREAMS", '["xspress"]')
    cls = ingester_class("ZmqSubXspressIngester")
    cfg = settings_class(cls)()
    assert type(cfg) is ZmqSubXspressSettings
    assert str(cfg.upstream_url) == "tcp://127.0.0.1:9999" and cfg.ingester_streams == ["xspress"]


def test_dump_of_the_capture_reads_in_dranspose_02(
    harness: Harness, capture: list[list[bytes]], dr02: str, tmp_path: Path
) -> None:
    """Our ingester's dump of the legacy capture: 0.2's replay reader and parse read it."""
    from dranspose_fast.dump import read_dump

    path = tmp_path / "xspress.cbors"
    sender = CaptureSender("PUB")
    try:
        ing = harness.ingester(ZmqSubXspressIngester, ["xsp"], upstream_url=sender.url,
                               dump_path=str(path))
        w0 = harness.worker("w0", ing)
        uid = harness.start_scan(["xsp"], ing)
        harness.assign(uid, 0, [[1]] * (N_IMAGES + 2), ["w0"])
        sender.send(capture)
        w0.receive(N_IMAGES + 2)
        harness.update(["xsp"], uid=uid, finished=True)
        wait_for(lambda: ing._scan is not None and ing._scan.finished
                 and ing._scan.dumper is None, what="dump closed")
    finally:
        sender.close()
    records = list(read_dump(path))
    assert [len(r.streams["xsp"].frames) for r in records] == [1] + [3] * N_IMAGES + [1]
    theirs = run_dr02(DR02_DUMP_SCRIPT, path)
    ours = []
    for r in records:
        p = parse(r.streams["xsp"])
        out: dict[str, Any] = {"event": r.event_number, "cls": type(p).__name__,
                               "frames": len(r.streams["xsp"].frames)}
        if isinstance(p, XspressImage):
            out["sum"] = int(p.data.sum())  # type: ignore[attr-defined]
            out["dtc"] = p.meta["dtc"].tolist()  # type: ignore[attr-defined]
        ours.append(out)
    assert ours == theirs
    assert [t["cls"] for t in theirs] == ["XspressStart"] + ["XspressImage"] * N_IMAGES + [
        "XspressEnd"]


def test_dump_of_dranspose_02_ingester_reads_here(
    capture: list[list[bytes]], dr02: str, tmp_path: Path
) -> None:
    """0.2's own ingester (its run_source, driven by a script in its venv) dumps the capture;
    our reader and parse read the dump as the messages our framer forms."""
    from dranspose_fast.dump import read_dump

    path = tmp_path / "xspress02.cbors"
    sender = CaptureSender("PUB")
    try:
        proc = spawn_dr02(DR02_INGEST_SCRIPT, sender.url, path)
        sender.send(capture)
        out = dr02_output(proc).decode()
    finally:
        sender.close()
    assert out.strip() == str(N_IMAGES + 2)
    records = list(read_dump(path))
    framer = XspressFramer()
    formed = [f for frames in capture for _k, f in framer.feed(frames)]
    assert [[as_bytes(f) for f in r.streams["xsp"].frames] for r in records] == [
        [as_bytes(f) for f in m] for m in formed]
    for r, m in zip(records, formed, strict=True):
        assert r.streams["xsp"].typ == "xspress"
        assert _summary(parse(r.streams["xsp"])) == _summary(parse(sd(m)))
