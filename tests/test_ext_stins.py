"""The compiled STINS kernels called directly: sizes, bounds, buffers, model construction."""

from __future__ import annotations

import gc
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast._stins import MAX_NDIM, image_nbytes, image_view, new_model
from dranspose_fast.data.stream1 import Stream1Data, Stream1Start
from dranspose_fast.errors import DecodeError

U2 = np.dtype(np.uint16)


# === image_view: values and memory ===


def test_view_of_bytes_matches_numpy_and_shares_memory() -> None:
    raw = np.arange(12, dtype="<u2").tobytes()
    arr = image_view(raw, U2, [3, 4])
    assert arr.shape == (3, 4)
    assert arr.dtype == U2
    assert arr.flags.c_contiguous
    assert not arr.flags.writeable  # bytes are immutable
    np.testing.assert_array_equal(arr, np.frombuffer(raw, "<u2").reshape(3, 4))
    assert np.shares_memory(arr, np.frombuffer(raw, np.uint8))


def test_view_of_bytearray_is_writeable_and_aliases() -> None:
    buf = bytearray(8)
    arr = image_view(buf, np.dtype("<u4"), (2,))
    assert arr.flags.writeable
    arr[1] = 0x01020304
    assert bytes(buf[4:]) == bytes([4, 3, 2, 1])


def test_readonly_memoryview_gives_readonly_array() -> None:
    buf = bytearray(4)
    arr = image_view(memoryview(buf).toreadonly(), np.dtype("u1"), [4])
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr[0] = 1


def test_memoryview_slice_with_offset_is_viewed_in_place() -> None:
    raw = bytes(range(32))
    view = memoryview(raw)[3:11]  # odd offset: not aligned for u4
    arr = image_view(view, np.dtype("<u4"), [2])
    np.testing.assert_array_equal(arr, np.frombuffer(raw[3:11], "<u4"))
    assert np.shares_memory(arr, np.frombuffer(raw, np.uint8))
    assert arr.ctypes.data == np.frombuffer(raw, np.uint8)[3:].ctypes.data


def test_non_native_byte_order() -> None:
    values = np.array([1, 258, 65535], dtype=">u2")
    arr = image_view(values.tobytes(), np.dtype(">u2"), [3])
    assert arr.dtype == np.dtype(">u2")
    assert arr.tolist() == [1, 258, 65535]


def test_array_keeps_its_buffer_alive() -> None:
    arr = image_view(bytearray(b"\x07" * 16), np.dtype("u1"), [4, 4])
    gc.collect()
    assert arr.sum() == 7 * 16


def test_zero_length_images() -> None:
    for shape in ([0], [0, 5], [3, 0, 2]):
        arr = image_view(b"", np.dtype("f8"), shape)
        assert arr.shape == tuple(shape)
        assert arr.size == 0
    with pytest.raises(DecodeError, match=r"holds 1 bytes.*needs 0 bytes"):
        image_view(b"x", U2, [0])


def test_max_ndim_accepted_and_one_more_rejected() -> None:
    arr = image_view(b"\x01", np.dtype("u1"), [1] * MAX_NDIM)
    assert arr.ndim == MAX_NDIM
    with pytest.raises(DecodeError, match=f"{MAX_NDIM + 1} dimensions"):
        image_view(b"\x01", np.dtype("u1"), [1] * (MAX_NDIM + 1))


# === image_view / image_nbytes: rejected input ===


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([], r"at least one dimension"),
        ([4, -2], r"shape\[1\] = -2 is negative"),
        ([2**63], r"shape\[0\] = 9223372036854775808 does not fit"),
        ([-(2**70)], r"shape\[0\] .* does not fit"),
        ([2**62, 4], r"overflows"),
        ([0, 2**62, 2**62], r"overflows"),  # empty, but numpy rejects it too
        ([True, 2], r"shape\[0\] is not an integer: True"),
        ([2, 2.0], r"shape\[1\] is not an integer: 2.0"),
        ([2, "2"], r"shape\[1\] is not an integer: '2'"),
        ("22", r"shape must be a list of integers, got str"),
        ({2: 2}, r"got dict"),
    ],
)
def test_bad_shapes(shape: object, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        image_view(b"\x00" * 8, U2, shape)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match=message):
        image_nbytes(shape, 2)  # type: ignore[arg-type]


def test_size_mismatch_names_both_sizes() -> None:
    with pytest.raises(DecodeError, match=r"holds 10 bytes, shape \[2, 2\] of uint16 needs 8"):
        image_view(b"\x00" * 10, U2, [2, 2])
    with pytest.raises(DecodeError, match=r"holds 6 bytes"):
        image_view(memoryview(b"\x00" * 10)[2:8], U2, [2, 2])


def test_bad_buffers_and_dtypes() -> None:
    with pytest.raises(DecodeError, match="not C-contiguous"):
        image_view(memoryview(b"\x00" * 16)[::2], np.dtype("u1"), [8])
    with pytest.raises(DecodeError, match="int does not support the buffer protocol"):
        image_view(5, np.dtype("u1"), [1])  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="holds Python objects"):
        image_view(b"\x00" * 8, np.dtype(object), [1])
    with pytest.raises(DecodeError, match="no item size"):
        image_view(b"", np.dtype("S0"), [1])
    with pytest.raises(TypeError):
        image_view(b"", "u1", [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="itemsize must be at least 1"):
        image_nbytes([1], 0)


def _expected_nbytes(shape: list[int], itemsize: int) -> int | None:
    """Oracle in Python integers: the size, or None when the shape must be rejected."""
    if not 1 <= len(shape) <= MAX_NDIM or any(d < 0 for d in shape):
        return None
    if any(d > sys.maxsize for d in shape):
        return None
    if math.prod(d for d in shape if d) * itemsize > sys.maxsize:
        return None
    return 0 if 0 in shape else math.prod(shape) * itemsize


shapes = st.lists(
    st.one_of(
        st.integers(min_value=-3, max_value=9),
        st.integers(min_value=-(2**65), max_value=2**65),
    ),
    max_size=6,
)


@settings(deadline=None, max_examples=300)
@given(shape=shapes, itemsize=st.sampled_from([1, 2, 4, 8, 16]), extra=st.integers(-2, 2))
def test_nbytes_and_view_against_integer_oracle(
    shape: list[int], itemsize: int, extra: int
) -> None:
    expected = _expected_nbytes(shape, itemsize)
    if expected is None:
        with pytest.raises(DecodeError):
            image_nbytes(shape, itemsize)
        return
    assert image_nbytes(shape, itemsize) == expected
    if expected > 1 << 16:
        return
    length = max(expected + extra, 0)
    dtype = np.dtype(f"V{itemsize}")
    buf = bytes(range(256)) * (length // 256 + 1)
    if length != expected:
        with pytest.raises(DecodeError, match=f"holds {length} bytes"):
            image_view(buf[:length], dtype, shape)
        return
    arr = image_view(buf[:length], dtype, shape)
    assert arr.shape == tuple(shape)
    assert arr.tobytes() == buf[:length]


# === new_model ===


def test_new_model_equals_validated_model() -> None:
    header = {
        "msg_number": 5,
        "htype": "image",
        "frame": 2,
        "shape": [4],
        "type": "u1",
        "compression": "none",
        "timestamps": {"a": 1.5},
    }
    reference = Stream1Data.model_validate(header)
    built = new_model(Stream1Data, dict(header), frozenset(Stream1Data.model_fields), None)
    assert built.__dict__ == reference.__dict__
    assert built.__pydantic_extra__ == reference.__pydantic_extra__ == {"timestamps": {"a": 1.5}}
    assert built.__pydantic_fields_set__ == reference.__pydantic_fields_set__
    assert built.timestamps == {"a": 1.5}
    assert built.model_dump() == reference.model_dump()


def test_new_model_reuses_values_without_extras_and_adds_more() -> None:
    values = {"msg_number": 1, "htype": "header", "filename": "f.h5"}
    names = frozenset(values)
    built = new_model(Stream1Start, values, names, None, {"data": 7})
    assert built.__dict__ is values
    assert built.__pydantic_extra__ == {"data": 7}
    assert built.__pydantic_fields_set__ == {"msg_number", "htype", "filename", "data"}
    assert built.data == 7
    built.filename = "g.h5"  # pydantic's own setattr still works on the result
    assert built.filename == "g.h5"


def test_new_model_sets_private_state() -> None:
    values = {"msg_number": 1, "htype": "image", "frame": 0, "shape": [1], "type": "u1"}
    values["compression"] = "none"
    built = new_model(Stream1Data, values, frozenset(values), {"_payload": ("a", "b")})
    assert built._payload == ("a", "b")


@pytest.mark.parametrize("cls", [int, dict, 5, "Stream1Start"])
def test_new_model_refuses_other_classes(cls: object) -> None:
    with pytest.raises(TypeError):
        new_model(cls, {}, frozenset(), None)  # type: ignore[type-var]
