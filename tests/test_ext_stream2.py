"""The compiled Stream V2 decoder (``dranspose_fast._stream2``) against independent encoders.

Messages are built with ``cbor2`` (and by hand where cbor2 cannot: indefinite lengths,
malformed items); compressed data comes from the HDF5 filters of ``hdf5plugin``, which use
the same framing as DECTRIS detectors, and is read back through ``dectris.compression``.
"""

from __future__ import annotations

import gc
import io
import math
import mmap
import pickle
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import h5py
import hdf5plugin
import numpy as np
import numpy.typing as npt
import pytest
import zmq
from cbor2 import CBORTag
from dectris.compression import decompress
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dranspose_fast._stream2 import Stream2DecodeError, Tagged, decode, scan
from dranspose_fast.errors import DecodeError
from tests.conftest import free_port

# RFC 8746 section 2.1: tag -> numpy dtype; 76 is reserved, 83/87 are IEEE binary128.
TYPED = {
    64: "u1", 65: ">u2", 66: ">u4", 67: ">u8", 68: "u1", 69: "<u2", 70: "<u4", 71: "<u8",
    72: "i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4", 79: "<i8",
    80: ">f2", 81: ">f4", 82: ">f8", 84: "<f2", 85: "<f4", 86: "<f8",
}
TAG_OF = {np.dtype("<u2"): 69, np.dtype("<u4"): 70, np.dtype("u1"): 64, np.dtype("<f4"): 85}


def compress(array: npt.NDArray[Any], algorithm: str) -> bytes:
    """``array`` compressed by an HDF5 filter (one chunk): DECTRIS' ``bslz4`` / ``lz4`` data."""
    if algorithm == "bslz4":
        filt = hdf5plugin.Bitshuffle(cname="lz4")
    elif algorithm == "lz4":
        filt = hdf5plugin.LZ4()
    else:
        raise ValueError(algorithm)
    with h5py.File(io.BytesIO(), "w") as f:
        dset = f.create_dataset("x", data=array, chunks=array.shape, **filt)
        _mask, chunk = dset.id.read_direct_chunk((0,) * array.ndim)
    return bytes(chunk)


def zipped(array: npt.NDArray[Any], algorithm: str) -> CBORTag:
    modifier = array.dtype.itemsize if algorithm == "bslz4" else 0
    return CBORTag(56500, [algorithm, modifier, compress(array, algorithm)])


def md(array: npt.NDArray[Any], content: Any = None) -> CBORTag:
    """Tag 40 (row-major) around a typed array holding ``array``."""
    return CBORTag(40, [list(array.shape), CBORTag(TAG_OF[array.dtype],
                                                   content or array.tobytes())])


def image_message(channels: dict[str, Any] | None = None, **extra: Any) -> bytes:
    """An image message as a DECTRIS detector sends it (field list: stream_v2/README.md)."""
    image = np.arange(6 * 5, dtype="<u2").reshape(6, 5)
    msg = {
        "type": "image", "image_id": 7, "series_id": 3, "series_unique_id": "s-3",
        "series_date": CBORTag(0, "2024-05-01T12:00:00.5Z"), "real_time": [1000, 100000],
        "start_time": [0, 100000], "stop_time": [1000, 100000],
        "data": channels if channels is not None else {"threshold_1": md(image)},
        "user_data": {"note": "x"},
    }
    msg.update(extra)
    return cbor2.dumps(CBORTag(55799, msg))


def failure(fn: Any, data: Any) -> Stream2DecodeError:
    with pytest.raises(Stream2DecodeError) as info:
        fn(data)
    return info.value


def both_fail(data: bytes) -> Stream2DecodeError:
    """decode and scan refuse ``data`` at the same field; the decode error is returned."""
    err = failure(decode, data)
    assert 0 <= err.offset <= len(data)
    assert failure(scan, data).field == err.field
    return err


# === the compression helper and the tags ===


@pytest.mark.parametrize("algorithm", ["bslz4", "lz4"])
def test_compress_round_trips_through_dectris_compression(algorithm: str) -> None:
    array = np.arange(3000, dtype="<u2").reshape(30, 100) % 77
    data = compress(array, algorithm)
    assert struct.unpack(">Q", data[:8])[0] == array.nbytes  # HDF5-filter header
    raw = decompress(data, algorithm, elem_size=2)
    assert raw == array.tobytes()


def test_self_describe_tag_is_transparent() -> None:
    value = {"type": "end", "series_id": 1}
    assert decode(cbor2.dumps(value)) == decode(cbor2.dumps(CBORTag(55799, value))) == value
    assert decode(cbor2.dumps(CBORTag(55799, CBORTag(55799, [1])))) == [1]


def test_date_time_tags() -> None:
    got = decode(cbor2.dumps([CBORTag(0, "2024-05-01T12:00:00.5Z"),
                              CBORTag(0, "2024-05-01T14:00:00+02:00"),
                              CBORTag(1, 1714564800), CBORTag(1, 1714564800.25)]))
    noon = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert got == [noon + timedelta(seconds=0.5), noon, noon, noon + timedelta(seconds=0.25)]
    assert all(d.tzinfo is not None for d in got)
    assert decode(cbor2.dumps(datetime(2020, 1, 2, tzinfo=UTC))) == cbor2.loads(
        cbor2.dumps(datetime(2020, 1, 2, tzinfo=UTC)))


def test_bignums() -> None:
    values = [2**64, 2**200 + 5, -(2**64) - 1, -(2**130)]
    data = cbor2.dumps(values)
    assert b"\xc2" in data and b"\xc3" in data  # cbor2 writes them as tags 2 and 3
    assert decode(data) == values
    assert scan(data) == (None, -1, -1)


@pytest.mark.parametrize("tag", sorted(TYPED))
@pytest.mark.parametrize("count", [0, 1, 7])
def test_every_typed_array_tag(tag: int, count: int) -> None:
    dtype = np.dtype(TYPED[tag])
    raw = np.random.default_rng(tag).integers(0, 256, count * dtype.itemsize, np.uint8).tobytes()
    got = decode(cbor2.dumps(CBORTag(tag, raw)))
    assert got.dtype == dtype and got.shape == (count,)
    np.testing.assert_array_equal(got, np.frombuffer(raw, dtype))  # NaN == NaN here
    assert scan(cbor2.dumps({"a": CBORTag(tag, raw)})) == (None, -1, -1)


def test_byte_orders_give_the_same_values() -> None:
    values = np.array([1.5, -2.25, 1e300, np.inf])
    big = decode(cbor2.dumps(CBORTag(82, values.astype(">f8").tobytes())))
    little = decode(cbor2.dumps(CBORTag(86, values.astype("<f8").tobytes())))
    np.testing.assert_array_equal(big, values)
    np.testing.assert_array_equal(little, values)
    ints = np.array([1, -2, 2**40], dtype=np.int64)
    assert decode(cbor2.dumps(CBORTag(75, ints.astype(">i8").tobytes()))).tolist() == \
        decode(cbor2.dumps(CBORTag(79, ints.astype("<i8").tobytes()))).tolist() == ints.tolist()


@pytest.mark.parametrize(("tag", "words"), [(76, "reserved"), (83, "binary128"),
                                            (87, "binary128")])
def test_reserved_and_binary128_typed_arrays_are_refused(tag: int, words: str) -> None:
    err = both_fail(cbor2.dumps({"x": CBORTag(tag, bytes(16))}))
    assert err.field == "x" and words in err.problem and str(tag) in err.problem


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4)])
@pytest.mark.parametrize("dtype", ["<u2", "<u4", "<f4"])
def test_multi_dimensional_arrays(shape: tuple[int, ...], dtype: str) -> None:
    flat = np.arange(math.prod(shape)).astype(dtype)
    row = decode(cbor2.dumps(CBORTag(40, [list(shape), CBORTag(TAG_OF[flat.dtype],
                                                                flat.tobytes())])))
    col = decode(cbor2.dumps(CBORTag(1040, [list(shape), CBORTag(TAG_OF[flat.dtype],
                                                                  flat.tobytes())])))
    np.testing.assert_array_equal(row, flat.reshape(shape))
    np.testing.assert_array_equal(col, flat.reshape(shape, order="F"))
    assert row.flags.c_contiguous and col.flags.f_contiguous
    assert not row.flags.writeable and not col.flags.writeable
    plain = decode(cbor2.dumps(CBORTag(40, [list(shape), flat.tolist()])))
    plain_f = decode(cbor2.dumps(CBORTag(1040, [list(shape), flat.tolist()])))
    np.testing.assert_array_equal(plain, flat.reshape(shape))
    np.testing.assert_array_equal(plain_f, flat.reshape(shape, order="F"))


def test_zero_and_no_dims() -> None:
    empty = decode(cbor2.dumps(CBORTag(40, [[0, 5], CBORTag(69, b"")])))
    assert empty.shape == (0, 5)
    scalar = decode(cbor2.dumps(CBORTag(40, [[], CBORTag(69, b"\x05\x00")])))
    assert scalar.shape == () and scalar == 5


@pytest.mark.parametrize(("algorithm", "dtype"), [("bslz4", "u1"), ("bslz4", "<u2"),
                                                  ("bslz4", "<u4"), ("lz4", "<u2")])
def test_compressed_images(algorithm: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    image = (rng.poisson(3, (64, 48)) * (rng.random((64, 48)) > 0.7)).astype(dtype)
    data = image_message({"threshold_1": md(image, zipped(image, algorithm))})
    msg = decode(data)
    got = msg["data"]["threshold_1"]
    np.testing.assert_array_equal(got, image)
    assert got.dtype == image.dtype and not got.flags.writeable
    assert type(got.base) is bytes  # a view of the decompressed bytes, not a copy of them
    assert scan(data) == ("image", 3, 7)


def test_compressed_byte_string_outside_a_typed_array_is_bytes() -> None:
    payload = np.arange(500, dtype="<u4")
    got = decode(cbor2.dumps({"blob": zipped(payload, "lz4")}))
    assert got == {"blob": payload.tobytes()}


def test_unknown_tags_become_tagged() -> None:
    got = decode(cbor2.dumps([CBORTag(30000, [1, "a"]), CBORTag(88, b"ab")]))
    assert got == [Tagged(30000, [1, "a"]), Tagged(88, b"ab")]
    assert got[0].tag == 30000 and got[0].value == [1, "a"]
    assert repr(got[1]) == "Tagged(88, b'ab')"
    assert pickle.loads(pickle.dumps(got[1])) == got[1]
    assert decode(cbor2.dumps({CBORTag(9, "k"): 1})) == {Tagged(9, "k"): 1}
    assert Tagged(1, 2) != Tagged(1, 3) and Tagged(1, 2) != (1, 2)


# === zero copy ===


def test_typed_arrays_are_read_only_views_of_the_input() -> None:
    data = image_message()
    arr = decode(data)["data"]["threshold_1"]
    assert np.shares_memory(arr, np.frombuffer(data, np.uint8))
    assert arr.base is data
    with pytest.raises(ValueError):
        arr[0, 0] = 1


def test_view_outlives_the_callers_reference() -> None:
    image = np.arange(30, dtype="<u2").reshape(6, 5)
    arr = decode(bytes(image_message()))["data"]["threshold_1"]
    gc.collect()
    np.testing.assert_array_equal(arr, image)


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "numpy", "mmap"])
def test_other_buffers_are_viewed_too(kind: str) -> None:
    data = image_message()
    if kind == "bytearray":
        buf: Any = bytearray(data)
    elif kind == "memoryview":
        buf = memoryview(b"xx" + data)[2:]
    elif kind == "numpy":
        buf = np.frombuffer(data, np.uint8).copy()
    else:
        buf = mmap.mmap(-1, len(data))
        buf.write(data)
    arr = decode(buf)["data"]["threshold_1"]
    assert not arr.flags.writeable  # even where the buffer is writeable
    assert np.shares_memory(arr, np.frombuffer(buf, np.uint8))
    assert scan(buf) == ("image", 3, 7)
    if kind == "bytearray":
        with pytest.raises(BufferError):
            buf.extend(b"more")  # the view holds the export: no reallocation under it
    del arr
    gc.collect()
    if kind == "mmap":
        buf.close()  # no export left


def test_non_contiguous_and_non_buffers_are_refused() -> None:
    strided = np.frombuffer(image_message() * 2, np.uint8)[::2]
    for fn in (decode, scan):
        with pytest.raises(BufferError):
            fn(strided)
        not_a_buffer: Any = "text"
        with pytest.raises(TypeError):
            fn(not_a_buffer)


def test_zmq_frame_from_a_real_push_pull_pair() -> None:
    image = np.arange(64 * 64, dtype="<u2").reshape(64, 64)
    data = image_message({"threshold_1": md(image)})
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    try:
        port = free_port()
        pull.bind(f"tcp://127.0.0.1:{port}")
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(data, copy=False)
        assert pull.poll(10000)
        frame = pull.recv(copy=False)
        assert isinstance(frame, zmq.Frame)
        assert scan(frame) == ("image", 3, 7)
        arr = decode(frame)["data"]["threshold_1"]
        assert np.shares_memory(arr, np.frombuffer(frame.buffer, np.uint8))
        del frame
        gc.collect()
        np.testing.assert_array_equal(arr, image)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


# === generic CBOR ===

LEAVES = (st.integers(-(2**64), 2**64 - 1) | st.floats(allow_nan=True, width=64)
          | st.floats(width=32) | st.floats(width=16) | st.binary(max_size=40)
          | st.text(max_size=20) | st.booleans() | st.none())
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=30)


def same(a: Any, b: Any) -> bool:
    """Equality in which NaN equals NaN and bool is not int."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(deadline=None, max_examples=300)
@given(VALUES, st.booleans())
def test_generic_values_equal_cbor2(value: Any, canonical: bool) -> None:
    data = cbor2.dumps(value, canonical=canonical)  # canonical: shortest floats (half, single)
    assert same(decode(data), cbor2.loads(data))
    assert scan(data) == (None, -1, -1) or isinstance(value, dict)


def test_integer_extremes_and_simple_values() -> None:
    values = [0, 23, 24, 255, 256, 2**32, 2**64 - 1, -1, -24, -25, -(2**63), -(2**63) - 1,
              -(2**64), True, False, None, 0.0, -0.0, 1.5, float("inf")]
    assert same(decode(cbor2.dumps(values)), values)
    assert decode(b"\xf7") is None  # undefined
    assert same(decode(b"\xf9\x7e\x00"), math.nan)  # half-precision NaN
    assert decode(b"\xf9\x3c\x00") == 1.0 and decode(b"\xfa\x3f\xc0\x00\x00") == 1.5


HAND = [  # (indefinite-length encodings, RFC 8949 section 3.2.2 and 3.2.3)
    (b"\x5f\x42\x01\x02\x43\x03\x04\x05\xff", b"\x01\x02\x03\x04\x05"),
    (b"\x5f\xff", b""),
    (b"\x7f\x62ab\x61c\xff", "abc"),
    (b"\x9f\x01\x9f\x02\xff\xff", [1, [2]]),
    (b"\xbf\x61a\x01\x61b\x9f\xff\xff", {"a": 1, "b": []}),
    (b"\x82\x9f\xff\xbf\xff", [[], {}]),
]


@pytest.mark.parametrize(("data", "value"), HAND)
def test_indefinite_lengths(data: bytes, value: Any) -> None:
    assert decode(data) == value == cbor2.loads(data)
    scan(data)


def test_indefinite_lengths_inside_tags() -> None:
    raw = np.arange(6, dtype="<u2").tobytes()
    # tag 40, indefinite [dims, elements] with indefinite dims and a chunked typed array
    data = (b"\xd8\x28\x9f\x9f\x02\x03\xff\xd8\x45\x5f\x44" + raw[:4] + b"\x48" + raw[4:]
            + b"\xff\xff")
    got = decode(data)
    np.testing.assert_array_equal(got, np.arange(6).reshape(2, 3))
    assert not got.flags.writeable
    scan(data)
    assert decode(b"\xc0\x7f\x6a2024-05-01\x6aT00:00:00Z\xff") == datetime(
        2024, 5, 1, tzinfo=UTC)


# === malformed messages ===

IMAGE = np.arange(30, dtype="<u2").reshape(6, 5)
CHANNEL = 'data["threshold_1"]'


def channel(value: Any) -> bytes:
    return image_message({"threshold_1": value})


def raw_compressed(header_size: int, data: bytes = b"") -> CBORTag:
    return CBORTag(56500, ["lz4", 0, struct.pack(">QI", header_size, 8192) + data])


MALFORMED = [
    # (name, message, field, words in the problem)
    ("tag 40 around a text", channel(CBORTag(40, "abc")), CHANNEL, "needs [dims, elements]"),
    ("tag 40 of 3 items", channel(CBORTag(40, [[1], CBORTag(64, b"a"), 1])), CHANNEL,
     "array of 3"),
    ("dims not unsigned", channel(CBORTag(40, [[-1], CBORTag(64, b"a")])), CHANNEL,
     "unsigned integers"),
    ("elements a text", channel(CBORTag(40, [[1], "a"])), CHANNEL, "typed array or an array"),
    ("typed array of text", channel(CBORTag(40, [[1], CBORTag(69, "ab")])), CHANNEL,
     "needs a byte string"),
    ("byte count", channel(CBORTag(40, [[2], CBORTag(69, b"abc")])), CHANNEL,
     "not a whole number of 2-byte"),
    ("dims product", channel(CBORTag(40, [[6, 6], CBORTag(69, IMAGE.tobytes())])), CHANNEL,
     "need 36 elements"),
    ("plain count", channel(CBORTag(40, [[2, 2], [1, 2, 3]])), CHANNEL, "need 4 elements"),
    ("plain nested", channel(CBORTag(40, [[2], [1, [2]]])), CHANNEL + "[1]", "not a scalar"),
    ("unknown compression", channel(md(IMAGE, CBORTag(56500, ["xyz", 2, bytes(20)]))),
     CHANNEL, "unknown compression 'xyz'"),
    ("bslz4 modifier 0", channel(md(IMAGE, CBORTag(56500, ["bslz4", 0, bytes(20)]))),
     CHANNEL, "element size"),
    ("compression not 3", channel(md(IMAGE, CBORTag(56500, ["lz4", 0]))), CHANNEL,
     "array of 2"),
    ("short header", channel(md(IMAGE, CBORTag(56500, ["lz4", 0, bytes(11)]))), CHANNEL,
     "shorter than its 12-byte header"),
    ("header vs dims", channel(md(IMAGE, raw_compressed(62, bytes(20)))), CHANNEL,
     "need 30 elements"),
    ("header vs item size", channel(md(IMAGE, raw_compressed(61, bytes(20)))), CHANNEL,
     "not a whole number"),
    ("header beyond lz4", {"blob": raw_compressed(10**12)}, "blob", "can hold"),
    ("datetime of int", {"series_date": CBORTag(0, 5)}, "series_date", "text string"),
    ("epoch of text", {"t": CBORTag(1, "x")}, "t", "number"),
    ("bignum of text", {"n": CBORTag(2, "x")}, "n", "byte string"),
    ("list index", {"channels": ["a", "b", CBORTag(64, "c")]}, "channels[2]",
     "byte string"),
    ("deep key", {"a": {"b": [{"c": CBORTag(40, 1)}]}}, 'a["b"][0]["c"]', "needs"),
    ("non-text key", {"a": {5: CBORTag(40, 1)}}, "a[5]", "needs"),
]


@pytest.mark.parametrize(("name", "message", "field", "words"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_is_refused_at_the_field(name: str, message: Any, field: str,
                                           words: str) -> None:
    data = message if isinstance(message, bytes) else cbor2.dumps(message)
    err = both_fail(data)
    assert isinstance(err, DecodeError) and isinstance(err, ValueError)
    assert err.field == field, name
    assert words in err.problem, err.problem
    scanned = failure(scan, data)
    assert (scanned.problem, scanned.offset) == (err.problem, err.offset)
    assert str(err) == f"{field}: {err.problem} (byte {err.offset})"


def test_decompression_failures_are_decode_errors() -> None:
    good = compress(IMAGE, "lz4")
    corrupt = good[:12] + bytes(len(good) - 12)
    data = channel(md(IMAGE, CBORTag(56500, ["lz4", 0, corrupt])))
    assert scan(data) == ("image", 3, 7)  # scan reads the header only, never the payload
    err = failure(decode, data)
    assert err.field == CHANNEL and "decompression failed" in err.problem
    # the header promises 4 bytes more than the payload yields
    longer = struct.pack(">Q", IMAGE.nbytes + 4) + good[8:]
    err = failure(decode, cbor2.dumps({"blob": CBORTag(56500, ["lz4", 0, longer])}))
    assert err.field == "blob"


@pytest.mark.parametrize(("data", "words"), [
    (b"", "truncated"), (b"\x1c", "reserved"), (b"\xff", "break"), (b"\x1f", "indefinite"),
    (b"\xf8\x10", "not well-formed"), (b"\xf0", "simple value"), (b"\x62\xff\xfe", "UTF-8"),
    (b"\x5f\x61a\xff", "chunk"), (b"\xa1\x80\x01", "not hashable"), (b"\x01\x02", "after"),
    (b"\x9b" + b"\xff" * 8, "truncated"), (b"\x81" * 100 + b"\x01", "deeper than 64"),
])
def test_not_cbor(data: bytes, words: str) -> None:
    err = failure(decode, data)
    assert words in err.problem
    if words != "UTF-8":
        assert failure(scan, data).problem == err.problem


def test_unhashable_keys() -> None:
    err = failure(decode, cbor2.dumps({"a": {CBORTag(9, b"k"): 1}}).replace(b"\x41k", b"\x81\x01"))
    assert err.field == "a" and "not hashable" in err.problem


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    for data in (b"\x81" * 100000 + b"\x00", b"\xd9\xd9\xf7" * 1000 + b"\x00",
                 b"\x9f" * 100000):
        both_fail(data)


def test_truncated_at_every_byte() -> None:
    image = np.arange(16 * 8, dtype="<u2").reshape(16, 8)
    data = image_message({"threshold_1": md(image, zipped(image, "bslz4")),
                          "threshold_2": md(image)})
    for cut in range(len(data)):
        for fn in (decode, scan):
            err = failure(fn, data[:cut])
            assert 0 <= err.offset <= cut


def test_trailing_bytes() -> None:
    data = image_message()
    err = both_fail(data + b"\x00")
    assert err.offset == len(data) and err.field == "" and "after the end" in err.problem
    assert str(err) == f"1 bytes after the end of the message (byte {len(data)})"


def test_error_is_picklable_and_str_without_offset() -> None:
    err = Stream2DecodeError("type", "missing")
    assert str(err) == "type: missing" and err.offset == -1
    again = pickle.loads(pickle.dumps(failure(decode, channel(CBORTag(40, "x")))))
    assert again.field == CHANNEL and str(again).startswith(CHANNEL + ": ")


# === scan ===


def test_scan_reports_type_and_ids() -> None:
    assert scan(image_message()) == ("image", 3, 7)
    assert scan(cbor2.dumps({"type": "start", "series_id": 2**64 - 1})) == ("start", 2**64 - 1, -1)
    assert scan(cbor2.dumps(CBORTag(55799, {"type": "end", "series_id": 9}))) == ("end", 9, -1)
    assert scan(cbor2.dumps({"type": "other", "image_id": -1, "series_id": "3"})) == \
        ("other", -1, -1)
    assert scan(cbor2.dumps({"type": 5, "x": {"type": "image", "image_id": 1}})) == \
        (None, -1, -1)
    assert scan(cbor2.dumps(["type", "image"])) == (None, -1, -1)
    assert scan(b"\xbf\x64type\x7f\x63ima\x62ge\xff\xff") == ("image", -1, -1)


def test_scan_agrees_with_decode_on_valid_messages() -> None:
    for data in (image_message(), image_message(extra=[CBORTag(1, 5.5), CBORTag(3, b"\x01")])):
        msg = decode(data)
        assert scan(data) == (msg["type"], msg["series_id"], msg["image_id"])


# === fuzz ===


def check_refusal(data: bytes) -> None:
    """Either call succeeds or raises Stream2DecodeError; nothing else escapes."""
    for fn in (decode, scan):
        try:
            fn(data)
        except Stream2DecodeError as err:
            assert 0 <= err.offset <= len(data)


@settings(deadline=None, max_examples=400)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_refusal(data)


FUZZ_IMAGE = np.arange(12 * 10, dtype="<u2").reshape(12, 10)
FUZZ_MESSAGE = image_message({"threshold_1": md(FUZZ_IMAGE, zipped(FUZZ_IMAGE, "bslz4")),
                              "threshold_2": md(FUZZ_IMAGE, zipped(FUZZ_IMAGE, "lz4")),
                              "threshold_3": md(FUZZ_IMAGE)})


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(FUZZ_MESSAGE) - 1), st.integers(0, 255),
                          st.sampled_from(["set", "insert", "delete"])), min_size=1, max_size=4))
def test_fuzz_mutated_image_message(edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(FUZZ_MESSAGE)
    for pos, byte, how in edits:
        pos = min(pos, len(data) - 1)
        if how == "set":
            data[pos] = byte
        elif how == "insert":
            data.insert(pos, byte)
        else:
            del data[pos]
    assume(bytes(data) != FUZZ_MESSAGE)
    check_refusal(bytes(data))
