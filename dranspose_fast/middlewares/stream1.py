"""Parser of STINS (MAX IV stream1) frames for workers: ``parse(data) -> Stream1PacketType``.

The hot path is: one ``msgspec`` JSON decode of the header, exact type checks of the required
fields, a model built without re-validation, and a zero-copy numpy view of the image payload
made and size-checked by the compiled ``dranspose_fast._stins``.  Headers whose fields are not
already of the right type go through pydantic validation, so whatever dranspose 0.2 accepted
(``"msg_number": "7"``) is still accepted; only the error path pays for it.

Compressed payloads (``"bslz4"``: bitshuffle+LZ4 as DECTRIS detectors and HDF5 filter 32008
write it; ``"lz4"``: HDF5 filter 32004) are decoded by ``dectris.compression`` into a new
(read-only) array.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import numpy as np
import zmq
from pydantic import ValidationError

from dranspose_fast._stins import image_nbytes, image_view, new_model
from dranspose_fast.data.stream1 import (
    StinsDecodeError,
    Stream1,
    Stream1Data,
    Stream1End,
    Stream1PacketType,
    Stream1Start,
)
from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares._json_and_dtypes import DTYPES, DtypeRefused, plain_dtype, short

__all__ = ["COMPRESSIONS", "StinsDecodeError", "parse"]

#: Values of the ``compression`` header field ``parse`` can decode.
COMPRESSIONS = ("none", "bslz4", "lz4")

_json_decode = msgspec.json.decode
_START_FIELDS = frozenset({"msg_number", "htype", "filename"})
_IMAGE_FIELDS = frozenset({"msg_number", "htype", "frame", "shape", "type", "compression"})
_END_FIELDS = frozenset({"msg_number", "htype"})
# Both compressed formats open with a big-endian u64 uncompressed size and u32 block size.
_CODEC_HEADER = struct.Struct(">QI")
_decompress: Callable[..., bytes] | None = None
_M = TypeVar("_M", bound=Stream1)


def parse(data: StreamData) -> Stream1PacketType:
    """Decode the frames of one STINS message.

    Parameters
    ----------
    data : StreamData
        ``typ="STINS"``; frames are ``bytes`` or ``zmq.Frame``: the JSON header, and for images
        the payload.

    Returns
    -------
    Stream1Start | Stream1Data | Stream1End
        Images carry ``.data``: for ``compression="none"`` a numpy view of the received
        payload (no copy; it keeps the frame alive), otherwise the decompressed array.
        Unknown header fields are kept as attributes.

    Raises
    ------
    StinsDecodeError
        A ``DecodeError`` naming what is wrong: typ, missing frames, invalid JSON (with its byte
        offset), a missing or mistyped field, an unknown htype, dtype or compression, a shape
        that is negative or overflows, a payload of the wrong size, or corrupt compressed data.
    """
    if data.typ != "STINS":
        raise StinsDecodeError(f"STINS parse got StreamData of typ {data.typ!r}, expected 'STINS'")
    frames = data.frames
    if not frames:
        raise StinsDecodeError("STINS message has no frames, expected a JSON header in frame 0")
    try:
        header = _json_decode(frames[0])  # type: ignore[arg-type]  # zmq.Frame is a buffer
    except (msgspec.DecodeError, RecursionError) as exc:
        raise StinsDecodeError(f"STINS header (frame 0) is not valid JSON: {exc}") from None
    except TypeError:
        raise StinsDecodeError(
            f"STINS header (frame 0) is a {type(frames[0]).__name__}, expected bytes or zmq.Frame"
        ) from None
    if type(header) is not dict:
        raise StinsDecodeError(
            f"STINS header (frame 0) is a JSON {type(header).__name__}, expected an object"
        )
    htype = header.get("htype")
    if htype == "image":
        return _parse_image(header, frames)
    if htype == "header":
        if type(header.get("msg_number")) is int and type(header.get("filename")) is str:
            return new_model(Stream1Start, header, _START_FIELDS, None)
        return _validated(Stream1Start, header)
    if htype == "series_end":
        if type(header.get("msg_number")) is int:
            return new_model(Stream1End, header, _END_FIELDS, None)
        return _validated(Stream1End, header)
    if htype is None:
        raise StinsDecodeError("STINS header (frame 0) has no 'htype' field")
    raise StinsDecodeError(
        f"STINS header field 'htype' is {short(htype)}, expected 'header', 'image' or 'series_end'"
    )


def _parse_image(header: dict[str, Any], frames: list[Any], lax: bool = True) -> Stream1Data:
    get = header.get
    shape = get("shape")
    typ = get("type")
    compression = get("compression")
    if not (
        type(get("msg_number")) is int
        and type(get("frame")) is int
        and type(shape) is list
        and type(typ) is str
        and type(compression) is str
    ):
        # Rare: let pydantic coerce (or reject) and continue with its exactly typed values.
        if not lax:
            raise StinsDecodeError(f"{_where(header)}: header fields have unexpected types")
        return _parse_image(_coerced(header), frames, lax=False)
    if len(frames) != 2:
        raise StinsDecodeError(
            f"{_where(header)}: expected 2 frames (header, data), got {len(frames)}"
            + (": the image data frame is missing" if len(frames) < 2 else "")
        )
    payload = frames[1]
    if type(payload) is not bytes and isinstance(payload, zmq.Frame):
        payload = payload.buffer
    dtype = DTYPES.get(typ)
    if dtype is None:
        dtype = _resolve_dtype(typ, header)
    try:
        if compression == "none":
            array = image_view(payload, dtype, shape)
            private: dict[str, Any] = {"_payload": None}
        elif compression == "bslz4" or compression == "lz4":
            array = _decode_compressed(payload, compression, dtype, shape, header)
            private = {"_payload": (array, payload)}
        else:
            raise StinsDecodeError(
                f"{_where(header)}: unknown compression {short(compression)}, "
                f"expected one of {', '.join(COMPRESSIONS)}"
            )
    except DecodeError as exc:
        if isinstance(exc, StinsDecodeError):
            raise
        if lax and any(type(d) is not int for d in shape):
            # Entries pydantic coerces ("2", 2.0) or names in its error; its shape is all ints.
            return _parse_image(_coerced(header), frames, lax=False)
        # The kernel words the size problem; add which message it was.
        raise StinsDecodeError(f"{_where(header)}: {exc}") from None
    return new_model(Stream1Data, header, _IMAGE_FIELDS, private, {"data": array})


def _where(header: dict[str, Any]) -> str:
    """Which image an error is about, for messages (built only when raising)."""
    return (
        f"STINS image msg_number={short(header.get('msg_number'))} "
        f"frame={short(header.get('frame'))}"
    )


def _coerced(header: dict[str, Any]) -> dict[str, Any]:
    """An image header after pydantic's lax validation; raises if it is invalid."""
    checked = _validated(Stream1Data, header)
    return {**checked.__dict__, **(checked.__pydantic_extra__ or {})}


def _validated(cls: type[_M], header: dict[str, Any]) -> _M:
    """The pydantic (lax, dranspose 0.2) path, with errors that name the field."""
    try:
        return cls.model_validate(header)
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in err['loc'])!r}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise StinsDecodeError(f"STINS {cls.__name__} header: {problems}") from None


def _resolve_dtype(name: str, header: dict[str, Any]) -> np.dtype[Any]:
    """numpy dtype for the ``type`` field; plain fixed-size types only (no objects, records)."""
    try:
        return plain_dtype(name)
    except DtypeRefused as exc:  # the header is only described on this (cache miss) path
        raise StinsDecodeError(f"{_where(header)}: field 'type' = {short(name)} {exc}") from None


def _decode_compressed(
    payload: Any, codec: str, dtype: np.dtype[Any], shape: list[int], header: dict[str, Any]
) -> np.ndarray[Any, Any]:
    """Decompress ``payload`` after checking its header against the shape, then view it."""
    global _decompress
    where = _where(header)  # the codec costs far more than this string
    nbytes = image_nbytes(shape, dtype.itemsize)
    try:
        raw = memoryview(payload).cast("B")
    except TypeError as exc:
        raise StinsDecodeError(
            f"{where}: {codec} payload is not a contiguous buffer: {exc}"
        ) from None
    if raw.nbytes < _CODEC_HEADER.size:
        raise StinsDecodeError(
            f"{where}: {codec} payload has {raw.nbytes} bytes, "
            f"shorter than its {_CODEC_HEADER.size}-byte header"
        )
    declared, _block = _CODEC_HEADER.unpack_from(raw)
    # Checked before decoding so a corrupt header cannot make the decoder allocate wildly.
    if declared != nbytes:
        raise StinsDecodeError(
            f"{where}: {codec} header (byte 0) declares {declared} uncompressed bytes, "
            f"shape {shape} of {dtype} needs {nbytes}"
        )
    if _decompress is None:
        # Imported on first use so importing the middleware stays cheap.
        from dectris.compression import decompress

        _decompress = decompress
    try:
        out = _decompress(raw, codec, elem_size=dtype.itemsize)
    except (RuntimeError, ValueError, TypeError, BufferError) as exc:
        raise StinsDecodeError(f"{where}: corrupt {codec} data: {exc}") from None
    if len(out) != nbytes:
        raise StinsDecodeError(
            f"{where}: {codec} data decoded to {len(out)} bytes, expected {nbytes}"
        )
    return image_view(out, dtype, shape)
