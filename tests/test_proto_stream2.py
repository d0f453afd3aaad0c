"""DECTRIS Stream V2: the parser, the framer, the ingester on real sockets, a live run + replay.

Messages are built from the interface description with cbor2 (``tests/stream2_messages.py``),
compressed by the HDF5 filters of hdf5plugin, so neither the encoder nor the compressor is
ours.  The compiled decoder itself is tested in ``tests/test_ext_stream2.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast.data.stream2 import (
    GoniometerAxis,
    Rational,
    Stream2DecodeError,
    Stream2End,
    Stream2Image,
    Stream2Start,
)
from dranspose_fast.event import StreamData
from dranspose_fast.ingester.framing import DATA, END, START, FrameError, UnknownMessageType
from dranspose_fast.ingesters import ingester_class
from dranspose_fast.ingesters.zmqpull_stream2 import Stream2Framer, ZmqPullStream2Ingester
from dranspose_fast.middlewares.stream2 import parse
from tests.capture_runs import Case, LiveEnsemble, replay_here
from tests.compat.proto_classes import summarise
from tests.ingester_harness import Harness, as_bytes, harness, wait_for  # noqa: F401
from tests.protocol_harness import stream_capture
from tests.stream2_messages import (
    end_message,
    image_message,
    images,
    multidim,
    series,
    start_message,
)


def _sd(message: bytes | zmq.Frame) -> StreamData:
    return StreamData(typ="STREAM2", frames=[message])


def _received(messages: list[bytes]) -> Iterator[zmq.Frame]:
    """The messages as ``zmq.Frame``s from a real PUSH/PULL pair, as workers get them."""
    ctx = zmq.Context.instance()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        for m in messages:
            push.send(m)
            yield pull.recv(copy=False)
    finally:
        push.close(linger=0)
        pull.close(linger=0)


# === parse ===


@pytest.mark.parametrize("compression", ["none", "bslz4", "lz4"])
@pytest.mark.parametrize("dtype", ["<u1", "<u2", "<u4", "<f4"])
@pytest.mark.parametrize("n_channels", [1, 3])
def test_images_come_back_as_sent(compression: str, dtype: str, n_channels: int) -> None:
    channels = [f"threshold_{i + 1}" for i in range(n_channels)]
    sent = images(2, (40, 56), dtype, channels, seed=n_channels)
    msgs = [image_message(3, k, data, compression=compression)  # type: ignore[arg-type]
            for k, data in enumerate(sent)]
    for k, frame in enumerate(_received(msgs)):
        img = parse(_sd(frame))
        assert type(img) is Stream2Image
        assert (img.series_id, img.image_id) == (3, k)
        assert list(img.data) == channels
        for name, arr in img.data.items():
            assert arr.dtype == np.dtype(dtype) and arr.shape == (40, 56)
            assert np.array_equal(arr, sent[k][name])
            assert not arr.flags.writeable
            # uncompressed: a view of the received frame; compressed: decompressed once
            assert np.shares_memory(arr, np.frombuffer(frame, np.uint8)) == (
                compression == "none")


def test_image_fields_are_typed() -> None:
    img = parse(_sd(image_message(9, 4, {"t": np.zeros((2, 3), "<u2")},
                                  user_data={"run": 7}, shutter="open")))
    assert isinstance(img, Stream2Image)
    assert isinstance(img.real_time, Rational) and img.real_time.denominator > 0
    assert float(img.stop_time or 0) > float(img.start_time or 0)
    assert isinstance(img.series_date, dt.datetime) and img.series_date.tzinfo is not None
    assert img.user_data == {"run": 7}
    assert img.model_extra == {"shutter": "open"}  # unknown fields are kept


def test_column_major_and_3d_arrays() -> None:
    arr = np.arange(24, dtype="<u2").reshape(4, 6)
    cube = np.arange(60, dtype="<f4").reshape(3, 4, 5)
    msg = _edit(IMAGE, data={"t": multidim(arr, column_major=True), "cube": multidim(cube)})
    img = parse(_sd(msg))
    assert isinstance(img, Stream2Image)
    assert np.array_equal(img.data["t"], arr) and np.array_equal(img.data["cube"], cube)


@pytest.mark.parametrize("detail", ["basic", "all"])
def test_start_fields_are_typed(detail: str) -> None:
    start = parse(_sd(start_message(5, channels=("threshold_1", "threshold_2"),
                                    shape=(32, 48), header_detail=detail,  # type: ignore[arg-type]
                                    firmware_field=[1, 2])))
    assert isinstance(start, Stream2Start)
    assert start.series_id == 5 and start.channels == ["threshold_1", "threshold_2"]
    assert isinstance(start.arm_date, dt.datetime)
    assert (start.image_size_x, start.image_size_y) == (48, 32)
    assert isinstance(start.goniometer, dict)
    assert all(isinstance(a, GoniometerAxis) for a in start.goniometer.values())
    assert set(start.threshold_energy or {}) == {"threshold_1", "threshold_2"}
    assert start.model_extra == {"firmware_field": [1, 2]}
    if detail == "all":
        assert start.pixel_mask is not None and start.flatfield is not None
        assert start.pixel_mask["threshold_2"].shape == (32, 48)
        assert start.countrate_correction_lookup_table is not None
    else:
        assert start.pixel_mask is None and start.flatfield is None


def test_end_and_model_equality() -> None:
    end = parse(_sd(end_message(5)))
    assert isinstance(end, Stream2End) and end.series_id == 5
    msg = image_message(1, 0, {"t": np.arange(6, dtype="<u2").reshape(2, 3)})
    assert parse(_sd(msg)) == parse(_sd(bytes(msg)))
    other = image_message(1, 0, {"t": np.arange(1, 7, dtype="<u2").reshape(2, 3)})
    assert parse(_sd(msg)) != parse(_sd(other))


def _edit(message: bytes, **changes: Any) -> bytes:
    item = cbor2.loads(message)
    fields = item.value if isinstance(item, cbor2.CBORTag) else item
    for key, value in changes.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    return cbor2.dumps(item)


IMAGE = image_message(1, 0, {"threshold_1": np.ones((4, 4), "<u2")})


@pytest.mark.parametrize(("message", "field", "words"), [
    (_edit(IMAGE, type="calibration"), "type", "no Stream V2 message type"),
    (_edit(IMAGE, type=None), "type", "missing"),
    (_edit(IMAGE, series_id=None), "series_id", "missing"),
    (_edit(IMAGE, image_id="3"), "image_id", "unsigned integer"),
    (_edit(IMAGE, data={"threshold_1": b"\x00" * 32}), 'data["threshold_1"]', "tag 40"),
    (_edit(IMAGE, data=[1, 2]), "data", "map"),
    (_edit(IMAGE, real_time=[1, 0]), "real_time", "rational"),
    (_edit(IMAGE, series_date="yesterday"), "series_date", "date-time"),
    (_edit(start_message(1), channels=5), "channels", "list"),
    (_edit(start_message(1), count_time="long"), "count_time", "number"),
    (_edit(start_message(1), goniometer={"omega": {"start": "x"}}),
     'goniometer["omega"]["start"]', "number"),
    (cbor2.dumps([1, 2]), "", "expected a map"),
    (b"\xff\x00", "", ""),
], ids=["type", "no-type", "no-series", "image-id", "channel", "data", "real-time", "date",
        "channels", "count-time", "goniometer", "array", "not-cbor"])
def test_bad_messages_name_the_field(message: bytes, field: str, words: str) -> None:
    with pytest.raises(Stream2DecodeError) as info:
        parse(_sd(message))
    assert info.value.field == field
    assert words in str(info.value)


def test_wrong_typ_or_frames() -> None:
    with pytest.raises(Stream2DecodeError, match="typ 'STINS'"):
        parse(StreamData(typ="STINS", frames=[IMAGE]))
    with pytest.raises(Stream2DecodeError, match="has 2"):
        parse(StreamData(typ="STREAM2", frames=[IMAGE, IMAGE]))


# === the framer ===


def test_framer_kinds_and_series_check() -> None:
    framer = Stream2Framer()
    msgs = series(2, shape=(8, 8))
    kinds = [framer.feed([m])[0][0] for m in msgs]
    assert kinds == [START, DATA, DATA, END]
    assert Stream2Framer.typ == "STREAM2"
    with pytest.raises(FrameError, match="running series is 1") as info:
        framer.feed([image_message(2, 0, {"t": np.zeros((2, 2), "<u2")})])
    assert info.value.field == "series_id"
    framer.reset()  # a new scan: any series starts it
    assert framer.feed([start_message(2)])[0][0] == START


@pytest.mark.parametrize(("message", "field"), [
    (b"not cbor at all", ""),
    (_edit(IMAGE, image_id=None), "image_id"),
    (_edit(IMAGE, data={"t": cbor2.CBORTag(40, [[4, 4], cbor2.CBORTag(69, b"\0" * 31)])}),
     'data["t"]'),
    (_edit(IMAGE, data={"t": cbor2.CBORTag(40, [[4, 5], cbor2.CBORTag(69, b"\0" * 32)])}),
     'data["t"]'),
    (_edit(IMAGE, data={"t": cbor2.CBORTag(40, [[2, 2], cbor2.CBORTag(
        69, cbor2.CBORTag(56500, ["zstd", 2, b"\0" * 20]))])}), 'data["t"]'),
    (_edit(IMAGE, data={"t": cbor2.CBORTag(40, "text")}), 'data["t"]'),
], ids=["not-cbor", "image-id", "bytes", "dims", "compression", "tag"])
def test_framer_refuses_what_a_worker_could_not_read(message: bytes, field: str) -> None:
    with pytest.raises(FrameError) as info:
        Stream2Framer().feed([message])
    assert not isinstance(info.value, UnknownMessageType)
    if field:
        assert info.value.field == field
    with pytest.raises(Stream2DecodeError):
        parse(_sd(message))  # and the worker's parse agrees


def test_framer_unknown_type_and_parts() -> None:
    with pytest.raises(UnknownMessageType, match="'calibration'"):
        Stream2Framer().feed([_edit(IMAGE, type="calibration")])
    with pytest.raises(FrameError, match="2 parts"):
        Stream2Framer().feed([IMAGE, IMAGE])


# === the ingester on real sockets ===


def test_series_streams_through_the_ingester(harness: Harness) -> None:
    assert ingester_class("ZmqPullStream2Ingester") is ZmqPullStream2Ingester
    msgs = series(3, shape=(16, 24), compression="bslz4")
    ing, got = stream_capture(harness, ZmqPullStream2Ingester, [[m] for m in msgs], len(msgs),
                              ("eiger",), socket="PUSH", exact=True)
    assert [[as_bytes(f) for f in s["eiger"].frames] for _e, s in got] == [[m] for m in msgs]
    parsed = [parse(s["eiger"]) for _e, s in got]
    assert [type(p) for p in parsed] == [Stream2Start] + [Stream2Image] * 3 + [Stream2End]
    c = wait_for(lambda: (c := ing.counter_values()).forwarded == 5 and c)
    assert c.malformed == 0 and c.dropped_unknown_type == 0


def test_bad_messages_are_counted_and_the_series_goes_on(harness: Harness) -> None:
    start, *imgs, end = series(2, shape=(8, 8), series_id=4)
    bad = [
        imgs[0],  # an image before its series' start
        b"\x00\x01not cbor",
        _edit(IMAGE, series_id=4, data={"t": cbor2.CBORTag(40, [[3, 3], cbor2.CBORTag(
            70, b"\0" * 8)])}),  # 8 bytes for 9 uint32
        image_message(9, 0, {"t": np.zeros((2, 2), "<u2")}),  # another series
        _edit(IMAGE, series_id=4, type="calibration"),  # unknown type
    ]
    messages = [[bad[0]], [start], *([m] for m in bad[1:]), [imgs[0]], [imgs[1]], [end]]
    ing, got = stream_capture(harness, ZmqPullStream2Ingester, messages, 4, ("eiger",),
                              socket="PUSH", exact=True)
    assert [as_bytes(s["eiger"].frames[0]) for _e, s in got] == [start, *imgs, end]
    c = wait_for(lambda: (c := ing.counter_values()).dropped_unknown_type == 1
                 and c.malformed == 4 and c, what="4 malformed, 1 unknown type")
    assert c.forwarded == 4


# === live, dumped and replayed ===


@pytest.fixture
def recorded_series(tmp_path: Path) -> Path:
    """A Stream V2 series as a capture file (one CBOR item per message: its frame list)."""
    path = tmp_path / "stream2.cbors"
    msgs = series(3, shape=(32, 40), channels=("threshold_1", "threshold_2"),
                  compression="lz4", series_id=11)
    msgs[2] = image_message(11, 1, images(1, (32, 40), "<u2", ["threshold_1", "threshold_2"],
                                          seed=5)[0], compression="none")
    with open(path, "wb") as fh:
        for m in msgs:
            cbor2.dump([m], fh)
    return path


def test_live_run_dump_and_replay_agree(recorded_series: Path, redis_url: str,
                                        tmp_path: Path) -> None:
    case = Case("eiger2", str(recorded_series), "PUSH", "ZmqPullStream2Ingester",
                "zmqpull_stream2", "middlewares.stream2", "data.stream2", 5)
    ens = LiveEnsemble([case], tmp_path, redis_url)
    try:
        ens.wait_ready()
        live, dump = ens.scan(case)
    finally:
        code = ens.close()
    assert code == 0, ens.log()
    replayed = replay_here(dump, tmp_path / "replayed.h5")
    assert replayed == live
    # and both are what the parser makes of the messages as sent
    with open(recorded_series, "rb") as fh:
        sent = [cbor2.load(fh)[0] for _ in range(5)]
    for k, message in enumerate(sent):
        (result,) = live[str(k)]
        assert result["streams"]["eiger2"] == summarise(_sd(message)), f"event {k}"
        assert "error" not in result["streams"]["eiger2"]


# === fuzz: only the documented errors escape ===


_FUZZ_BASE = [start_message(1, shape=(4, 6), header_detail="all"),
              image_message(1, 0, {"t": np.arange(24, dtype="<u2").reshape(4, 6)},
                            compression="bslz4"),
              image_message(1, 1, {"t": np.arange(24, dtype="<u4").reshape(4, 6)}),
              end_message(1)]


@settings(deadline=None, max_examples=300)
@given(st.sampled_from(_FUZZ_BASE), st.data())
def test_fuzz_parse_and_framer(base: bytes, data: st.DataObject) -> None:
    """Flip, cut or insert bytes of real messages: the framer raises FrameError and parse
    Stream2DecodeError, nothing else (any other exception fails the test)."""
    msg = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(msg) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            msg[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del msg[pos:pos + data.draw(st.integers(1, 8))]
        else:
            msg[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        if not msg:
            msg = bytearray(b"\x00")
    with contextlib.suppress(FrameError):
        Stream2Framer().feed([bytes(msg)])
    with contextlib.suppress(Stream2DecodeError):
        parse(_sd(bytes(msg)))
