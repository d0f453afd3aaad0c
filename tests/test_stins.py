"""STINS (stream1) models and ``middlewares.stream1.parse``: round trips, views, codecs, errors."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import msgspec
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast.data.stream1 import (
    StinsDecodeError,
    Stream1Data,
    Stream1End,
    Stream1Packet,
    Stream1Start,
)
from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.middlewares.stream1 import parse


def frames_of(header: dict[str, Any], *payload: Any) -> StreamData:
    return make_stream_data("STINS", [json.dumps(header).encode(), *payload])


def image_header(
    shape: list[int], typ: str = "uint16", compression: str = "none"
) -> dict[str, Any]:
    return {
        "msg_number": 12,
        "htype": "image",
        "frame": 3,
        "shape": shape,
        "type": typ,
        "compression": compression,
    }


# === Round trips ===


def test_start_and_end_round_trip_with_extras() -> None:
    start = Stream1Start(msg_number=1, filename="/data/scan.h5", det="eiger", ntrig=[1, 2])
    back = parse(start.to_stream_data())
    assert isinstance(back, Stream1Start)
    assert back == start
    assert back.det == "eiger"
    assert back.ntrig == [1, 2]
    end = parse(Stream1End(msg_number=9).to_stream_data())
    assert isinstance(end, Stream1End)
    assert end.msg_number == 9
    assert end.htype == "series_end"


def test_image_round_trip_keeps_timestamps() -> None:
    img = (np.arange(64 * 48, dtype=np.uint16) * 7).reshape(64, 48)
    timestamps = {"dtime": 0.25, "start": 1700000000.5}
    packet = Stream1Data(
        msg_number=2,
        frame=0,
        shape=[64, 48],
        type="uint16",
        compression="none",
        data=img,
        timestamps=timestamps,
    )
    data = packet.to_stream_data()
    assert data.typ == "STINS"
    assert len(data.frames) == 2
    back = parse(data)
    assert isinstance(back, Stream1Data)
    assert back.timestamps == timestamps
    assert (back.msg_number, back.frame, back.shape) == (2, 0, [64, 48])
    np.testing.assert_array_equal(back.data, img)
    assert "data" not in json.loads(data.frames[0])


def test_parsed_state_equals_pydantic_validation() -> None:
    header = image_header([2, 2]) | {"timestamps": {"a": 1}, "note": "x"}
    back = parse(frames_of(header, b"\x00" * 8))
    reference = Stream1Packet.validate_json(json.dumps(header))
    assert isinstance(reference, Stream1Data)
    assert back.__dict__ == reference.__dict__
    assert back.model_extra is not None
    assert {k: v for k, v in back.model_extra.items() if k != "data"} == reference.model_extra
    assert back.model_fields_set == reference.model_fields_set | {"data"}
    assert back.model_dump(exclude={"data"}) == reference.model_dump()


def test_type_adapter_discriminates_on_htype() -> None:
    assert isinstance(
        Stream1Packet.validate_python({"msg_number": 1, "htype": "series_end"}), Stream1End
    )
    with pytest.raises(ValueError):
        Stream1Packet.validate_python({"msg_number": 1, "htype": "nope"})


def test_lax_values_are_coerced_like_dranspose_02() -> None:
    header = image_header([2]) | {"msg_number": "7", "frame": 4.0}
    back = parse(frames_of(header, b"\x01\x00\x02\x00"))
    assert (back.msg_number, back.frame) == (7, 4)
    assert back.data.tolist() == [1, 2]
    back = parse(frames_of(image_header(["1", 2.0]), b"\x01\x00\x02\x00"))
    assert back.shape == [1, 2]
    assert back.data.tolist() == [[1, 2]]


@pytest.mark.parametrize("typ", [">u2", "<u2", "<f4", ">f8", "uint8", "int32", "complex64", "bool"])
def test_dtypes(typ: str) -> None:
    rng = np.random.default_rng(1)
    img = (rng.random((5, 7)) * 100).astype(typ)
    back = parse(
        Stream1Data(
            msg_number=0, frame=0, shape=[5, 7], type=typ, compression="none", data=img
        ).to_stream_data()
    )
    assert back.data.dtype == np.dtype(typ)
    np.testing.assert_array_equal(back.data, img)


# === Zero copy ===


def test_data_is_a_view_of_a_bytes_frame() -> None:
    raw = np.arange(32, dtype="<u2").tobytes()
    back = parse(frames_of(image_header([4, 8]), raw))
    assert np.shares_memory(back.data, np.frombuffer(raw, np.uint8))
    assert not back.data.flags.writeable


def test_data_is_a_view_of_a_large_zero_copy_frame() -> None:
    img = np.arange(256 * 512, dtype=np.uint16).reshape(256, 512)  # 256 KiB
    frame = zmq.Frame(img.tobytes(), copy=False)
    header = json.dumps(image_header([256, 512])).encode()
    back = parse(make_stream_data("STINS", [zmq.Frame(header), frame]))
    assert np.shares_memory(back.data, frame.buffer)
    np.testing.assert_array_equal(back.data, img)
    del frame
    np.testing.assert_array_equal(back.data, img)  # the view keeps the frame alive


def test_frames_received_over_zmq_are_viewed_in_place() -> None:
    img = np.arange(300 * 400, dtype="<u2").reshape(300, 400)
    header = Stream1Data(msg_number=5, frame=5, shape=[300, 400], type="<u2", compression="none")
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    try:
        pull.rcvtimeo = 5000
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send_multipart([header.model_dump_json().encode(), img.tobytes()])
        frames = pull.recv_multipart(copy=False)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()
    back = parse(make_stream_data("STINS", frames))
    assert np.shares_memory(back.data, frames[1].buffer)
    np.testing.assert_array_equal(back.data, img)


def test_to_stream_data_frame_policy() -> None:
    small = Stream1Data(
        msg_number=0,
        frame=0,
        shape=[8],
        type="u1",
        compression="none",
        data=np.arange(8, dtype=np.uint8),
    ).to_stream_data()
    assert all(type(f) is bytes for f in small.frames)
    big_img = np.ones((256, 256), dtype=np.uint16)
    big = Stream1Data(
        msg_number=0, frame=0, shape=[256, 256], type="u2", compression="none", data=big_img
    ).to_stream_data()
    assert type(big.frames[0]) is bytes
    assert isinstance(big.frames[1], zmq.Frame)
    assert np.shares_memory(np.frombuffer(big.frames[1].buffer, np.uint8), big_img)


# === Compressed payloads from the real HDF5 filters ===


@functools.cache
def hdf5_chunks(dtype: str = "<u2") -> tuple[np.ndarray[Any, Any], bytes, bytes]:
    """(image, bitshuffle-LZ4 chunk, LZ4 chunk) written by h5py with the hdf5plugin filters."""
    rng = np.random.default_rng(7)
    img = rng.poisson(3.0, size=(48, 80)).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp, h5py.File(Path(tmp) / "chunks.h5", "w") as f:
        bs = f.create_dataset(
            "bs", data=img, chunks=img.shape, **hdf5plugin.Bitshuffle(cname="lz4")
        )
        lz = f.create_dataset("lz", data=img, chunks=img.shape, **hdf5plugin.LZ4())
        bs_chunk = bytes(bs.id.read_direct_chunk((0, 0))[1])
        lz_chunk = bytes(lz.id.read_direct_chunk((0, 0))[1])
    return img, bs_chunk, lz_chunk


@pytest.mark.parametrize("dtype", ["<u2", "<u4", "<f4"])
@pytest.mark.parametrize("codec", ["bslz4", "lz4"])
def test_hdf5_filter_chunks_decode(codec: str, dtype: str) -> None:
    img, bs_chunk, lz_chunk = hdf5_chunks(dtype)
    chunk = bs_chunk if codec == "bslz4" else lz_chunk
    assert len(chunk) < img.nbytes  # really compressed
    header = image_header(list(img.shape), np.dtype(dtype).str, codec)
    for payload in (chunk, zmq.Frame(chunk)):
        back = parse(frames_of(header, payload))
        assert back.data.dtype == img.dtype
        np.testing.assert_array_equal(back.data, img)


def test_parsed_compressed_packet_re_emits_its_payload() -> None:
    img, bs_chunk, _ = hdf5_chunks()
    packet = Stream1Data(
        msg_number=1, frame=1, shape=list(img.shape), type="<u2", compression="bslz4", data=bs_chunk
    )
    data = packet.to_stream_data()
    assert bytes(data.frames[1]) == bs_chunk
    back = parse(data)
    assert bytes(back.to_stream_data().frames[1]) == bs_chunk
    back.data = back.data.copy()  # no longer the decoded payload: cannot re-compress
    with pytest.raises(ValueError, match="cannot compress"):
        back.to_stream_data()


def test_middleware_import_does_not_load_the_codec() -> None:
    code = (
        "import sys, dranspose_fast.middlewares.stream1;print('dectris.compression' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# === Bad input ===


def _bad(data: StreamData, pattern: str) -> None:
    with pytest.raises(StinsDecodeError, match=pattern) as info:
        parse(data)
    assert isinstance(info.value, DecodeError)


def test_bad_envelopes() -> None:
    _bad(make_stream_data("EIGER", [b"{}"]), r"typ 'EIGER'")
    _bad(make_stream_data("STINS", []), r"no frames")
    _bad(make_stream_data("STINS", [b'{"htype": "image",}']), r"not valid JSON.*byte 18")
    _bad(make_stream_data("STINS", [b"[1, 2]"]), r"JSON list, expected an object")
    _bad(make_stream_data("STINS", [12]), r"frame 0\) is a int")
    _bad(make_stream_data("STINS", [b"[" * 100000]), r"not valid JSON")
    _bad(frames_of({"msg_number": 1}), r"no 'htype' field")
    _bad(frames_of({"msg_number": 1, "htype": "dimage-1.0"}), r"'htype' is 'dimage-1.0'")


def test_bad_fields_are_named() -> None:
    header = image_header([2])
    del header["frame"]
    _bad(frames_of(header, b"xxxx"), r"field 'frame': Field required")
    _bad(frames_of(image_header([2]) | {"shape": "abc"}, b"xxxx"), r"field 'shape'")
    _bad(frames_of(image_header([2]) | {"shape": [1, "x"]}, b"xx"), r"field 'shape.1'")
    _bad(frames_of({"msg_number": 1, "htype": "header"}), r"field 'filename': Field required")
    _bad(frames_of({"msg_number": [], "htype": "series_end"}), r"field 'msg_number'")


@pytest.mark.parametrize(
    ("header", "payload", "pattern"),
    [
        (image_header([2, 2]), None, r"msg_number=12 frame=3: .*got 1.*data frame is missing"),
        (image_header([2], "uint17"), b"xxxx", r"field 'type' = 'uint17' is no numpy dtype"),
        (image_header([2], "O"), b"x" * 16, r"field 'type' = 'O' is not a plain"),
        (image_header([2], "i4,i4"), b"x" * 16, r"not a plain"),
        (image_header([2], "a"), b"xx", r"'a' is no numpy dtype"),  # deprecated alias
        (image_header([2], "S0"), b"", r"has no item size"),
        (image_header([2, -3]), b"", r"shape\[1\] = -3 is negative"),
        (image_header([2**40, 2**40]), b"", r"overflows"),
        (image_header([2, 2]), b"x" * 10, r"holds 10 bytes, shape \[2, 2\] of uint16 needs 8"),
        (image_header([2], compression="zstd"), b"xxxx", r"unknown compression 'zstd'"),
    ],
)
def test_bad_images(header: dict[str, Any], payload: bytes | None, pattern: str) -> None:
    data = frames_of(header) if payload is None else frames_of(header, payload)
    _bad(data, pattern)


def test_bad_image_frame_count() -> None:
    _bad(frames_of(image_header([1]), b"xx", b"yy"), r"expected 2 frames .*got 3")


@pytest.mark.parametrize("codec", ["bslz4", "lz4"])
def test_bad_compressed_payloads(codec: str) -> None:
    img, bs_chunk, lz_chunk = hdf5_chunks()
    chunk = bs_chunk if codec == "bslz4" else lz_chunk
    header = image_header(list(img.shape), "<u2", codec)
    _bad(frames_of(header, chunk[:7]), rf"{codec} payload has 7 bytes, shorter than")
    wrong_size = (img.nbytes * 2).to_bytes(8, "big") + chunk[8:]
    _bad(frames_of(header, wrong_size), rf"declares {img.nbytes * 2} uncompressed bytes")
    _bad(frames_of(header, chunk[:12] + b"\xff" * 40), rf"corrupt {codec} data")
    _bad(frames_of(header, chunk[: len(chunk) // 2]), rf"corrupt {codec} data")
    _bad(frames_of(image_header([2], "<u2", codec), 5), r"not a contiguous buffer")


def test_encoding_an_array_as_compressed_is_refused() -> None:
    packet = Stream1Data(
        msg_number=0, frame=0, shape=[2], type="u1", compression="bslz4", data=np.zeros(2, np.uint8)
    )
    with pytest.raises(ValueError, match="cannot compress an array as 'bslz4'"):
        packet.to_stream_data()


# === Fuzzing: only DecodeError, and right data when valid ===

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
field_values = {
    "msg_number": st.integers(-5, 5) | json_values,
    "htype": st.sampled_from(["header", "image", "series_end", "other"]) | json_values,
    "frame": st.integers(0, 5) | json_values,
    "filename": st.text(max_size=5) | json_values,
    "shape": st.lists(st.integers(-2, 6), max_size=3) | json_values,
    "type": st.sampled_from(["uint16", ">u2", "<f4", "u1", "O", "V0", "i4,i4", "x"]) | json_values,
    "compression": st.sampled_from(["none", "bslz4", "lz4", "zstd"]) | json_values,
    "timestamps": json_values,
}
headers = st.fixed_dictionaries({}, optional=field_values)
payloads = st.none() | st.binary(max_size=80) | st.integers()


def _parse_or_decode_error(data: StreamData) -> Any:
    try:
        return parse(data)
    except DecodeError:
        return None


@settings(deadline=None, max_examples=300)
@given(header=headers, payload=payloads, extra=st.booleans())
def test_fuzz_random_json_headers(header: dict[str, Any], payload: Any, extra: bool) -> None:
    frames: list[Any] = [msgspec.json.encode(header)]
    if payload is not None:
        frames.append(payload)
    if extra:
        frames.append(b"")
    _parse_or_decode_error(make_stream_data("STINS", frames))


@settings(deadline=None, max_examples=300)
@given(raw=st.binary(max_size=64), payload=st.binary(max_size=16))
def test_fuzz_random_bytes(raw: bytes, payload: bytes) -> None:
    _parse_or_decode_error(make_stream_data("STINS", [raw, payload]))
    _parse_or_decode_error(make_stream_data("STINS", [zmq.Frame(raw)]))


@settings(deadline=None, max_examples=300)
@given(
    shape=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    typ=st.sampled_from(["uint8", ">u2", "<u2", "<f4", ">i8", "c8"]),
    cut=st.integers(-3, 3),
    seed=st.integers(0, 2**32 - 1),
    as_frame=st.booleans(),
)
def test_fuzz_images_truncated_or_not(
    shape: list[int], typ: str, cut: int, seed: int, as_frame: bool
) -> None:
    img = np.random.default_rng(seed).integers(0, 200, size=shape).astype(typ)
    raw = img.tobytes()
    if cut > 0:
        raw = raw + bytes(cut)
    elif cut < 0:
        raw = raw[:cut]
    payload: Any = zmq.Frame(raw) if as_frame else raw
    data = frames_of(image_header(shape, typ), payload)
    if len(raw) != img.nbytes:
        with pytest.raises(StinsDecodeError, match=f"holds {len(raw)} bytes"):
            parse(data)
        return
    back = parse(data)
    assert back.data.shape == tuple(shape)
    np.testing.assert_array_equal(back.data, img)


@settings(deadline=None, max_examples=200)
@given(
    codec=st.sampled_from(["bslz4", "lz4"]),
    start=st.integers(0, 400),
    stop=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 399), st.integers(1, 255)), max_size=4),
)
def test_fuzz_damaged_compressed_payloads(
    codec: str, start: int, stop: int, flips: list[tuple[int, int]]
) -> None:
    img, bs_chunk, lz_chunk = hdf5_chunks()
    chunk = bytearray(bs_chunk if codec == "bslz4" else lz_chunk)
    for pos, bit in flips:
        if pos < len(chunk):
            chunk[pos] ^= bit
    damaged = bytes(chunk[start:]) if start < stop else bytes(chunk[:stop])
    back = _parse_or_decode_error(frames_of(image_header(list(img.shape), "<u2", codec), damaged))
    if back is not None:  # LZ4 has no checksum: damage may decode, but never to a wrong size
        assert back.data.shape == img.shape
