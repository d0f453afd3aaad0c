"""Parser of DECTRIS Eiger legacy stream messages for workers: ``parse(data)``.

Returns what dranspose 0.2 returns: an ``EigerLegacyHeader`` with ``.info`` (part 2) and
``.appendix`` (part 9), an ``EigerLegacyImage`` with ``.data`` (part 2 plus ``"buffer"``, the
image part) and ``.config`` (part 4), or an ``EigerLegacyEnd``.  The JSON parts are decoded
with msgspec and the models built without re-validation; part 1 goes through pydantic only
when its fields are not already of the right type (so whatever 0.2 accepted still is).

Changed from dranspose 0.2, on purpose:

* ``data["buffer"]`` is a read-only ``memoryview`` of the received image frame, not a
  ``bytes`` copy (0.2 copied every image).  It supports what code reads from bytes: ``len``,
  slicing, ``==`` with bytes, ``.tobytes()``, ``.hex()`` and the buffer protocol
  (``np.frombuffer``, ``bitshuffle``, ``dectris.compression``, ``h5py``'s
  ``write_direct_chunk``).  It cannot be pickled or deep-copied: keep ``bytes(buffer)`` if the
  bytes must outlive the event or travel to the reducer.  It is a memoryview whether the
  frames came from a socket (``zmq.Frame``) or a dump (``bytes``), so replays behave as live.
* ``EigerLegacyImage.array`` (new): for an uncompressed image (``encoding`` ``"<"`` or ``">"``)
  the image as a read-only numpy view of the frame, shaped ``shape[::-1]`` (DECTRIS gives
  ``[x, y]``; numpy rows are ``y``); ``None`` for compressed images.
* A message 0.2 would stop on with a bare ``AssertionError`` or ``KeyError`` raises
  ``EigerLegacyDecodeError`` (a ``ValueError``) naming the part and field.  Besides 0.2's
  9-part header and 5-part image, the forms the DECTRIS interface also sends are read:
  ``header_detail`` ``"basic"`` (2 parts, or 3 with the appendix) and ``"none"`` (1 or 2), an
  8-part ``"all"`` header without appendix (``.appendix`` is then ``None``, and ``.info`` is
  ``None`` when there is no part 2), an image without its appendix part (4 parts).
* Uncompressed images are checked: ``shape`` times the ``type``'s size, and ``size`` if given,
  must equal the image part's length.  Compressed images are passed on unchecked, as in 0.2
  (``size`` is the compressed length, which truncated recordings do not keep).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np
import zmq
from pydantic import ValidationError

from dranspose_fast._stins import image_view, new_model
from dranspose_fast.data.eiger_legacy import (
    ArrayHolder,
    EigerLegacyDecodeError,
    EigerLegacyEnd,
    EigerLegacyHeader,
    EigerLegacyImage,
)
from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares._json_and_dtypes import (
    DtypeRefused,
    JsonRefused,
    json_value,
    plain_dtype,
    short,
)

__all__ = ["EigerLegacyDecodeError", "HEADER_PARTS", "parse"]

#: Part counts of a header message by ``header_detail``: without and with the appendix.
HEADER_PARTS: Final[dict[str, tuple[int, int]]] = {"all": (8, 9), "basic": (2, 3), "none": (1, 2)}
#: Part counts of an image message: without and with the image appendix.
IMAGE_PARTS: Final = (4, 5)

_IMAGE_FIELDS: Final = frozenset({"htype", "frame"})
_HTYPE_ONLY: Final = frozenset({"htype"})
_PLAIN_KINDS: Final = frozenset("uif")
_dtypes: dict[tuple[str, str], np.dtype[Any]] = {}
_DTYPE_CACHE_MAX: Final = 64


def parse(data: StreamData) -> EigerLegacyHeader | EigerLegacyImage | EigerLegacyEnd:
    """Decode the parts of one Eiger legacy message.

    Parameters
    ----------
    data : StreamData
        ``typ="EIGER_LEGACY"``; frames are ``bytes`` or ``zmq.Frame`` (the message's parts).

    Returns
    -------
    EigerLegacyHeader | EigerLegacyImage | EigerLegacyEnd
        As dranspose 0.2 (see the module docstring for the zero-copy ``data["buffer"]`` and the
        added ``EigerLegacyImage.array``).

    Raises
    ------
    EigerLegacyDecodeError
        naming the part and field: wrong typ, a part that is not JSON, an unknown ``htype``, a
        part count that does not fit the message, an invalid ``frame``, or an uncompressed
        image whose ``shape``, ``type`` or ``size`` does not match its image part.
    """
    if data.typ != "EIGER_LEGACY":
        raise EigerLegacyDecodeError(
            f"Eiger legacy parse got StreamData of typ {data.typ!r}, expected 'EIGER_LEGACY'"
        )
    frames = data.frames
    if not frames:
        raise EigerLegacyDecodeError("Eiger legacy message has no parts")
    head = _json_part(frames, 0, "message header")
    if type(head) is not dict:
        raise EigerLegacyDecodeError(
            f"Eiger legacy part 1 (message header) is a JSON {type(head).__name__}, "
            "expected an object"
        )
    htype = head.get("htype")
    if htype == "dimage-1.0":
        return _image(head, frames)
    if htype == "dheader-1.0":
        return _header(head, frames)
    if htype == "dseries_end-1.0":
        end: EigerLegacyEnd = new_model(EigerLegacyEnd, head, _HTYPE_ONLY, None)
        return end
    if htype is None:
        raise EigerLegacyDecodeError("Eiger legacy part 1 (message header) has no field 'htype'")
    raise EigerLegacyDecodeError(
        f"Eiger legacy part 1 field 'htype' is {short(htype)}, "
        "expected 'dheader-1.0', 'dimage-1.0' or 'dseries_end-1.0'"
    )


def header_parts(head: dict[str, Any]) -> tuple[int, int]:
    """The part counts a header message may have: (without appendix, with appendix).

    ``header_detail`` missing or unknown: 0.2's form only, 9 parts, the appendix last
    (``(0, 9)``: no form without appendix).
    """
    detail = head.get("header_detail")
    if type(detail) is str:
        return HEADER_PARTS.get(detail, (0, 9))
    return (0, 9)


def _header(head: dict[str, Any], frames: list[Any]) -> EigerLegacyHeader:
    n = len(frames)
    bare, full = header_parts(head)
    if n != bare and n != full:
        raise EigerLegacyDecodeError(
            f"Eiger legacy header (header_detail={short(head.get('header_detail'))}) has "
            f"{n} parts, expected {full}" + (f" (or {bare} without appendix)" if bare else "")
        )
    # Part 2, the detector configuration, is there unless header_detail is "none".
    info = _json_part(frames, 1, "detector configuration") if full >= 3 else None
    appendix = _json_part(frames, n - 1, "appendix") if n == full else None
    packet: EigerLegacyHeader = new_model(
        EigerLegacyHeader, head, _HTYPE_ONLY, None, {"info": info, "appendix": appendix}
    )
    return packet


def _image(head: dict[str, Any], frames: list[Any]) -> EigerLegacyImage:
    n = len(frames)
    if n != 4 and n != 5:
        raise EigerLegacyDecodeError(
            f"Eiger legacy image has {n} parts, expected 5 (header, data description, image, "
            "config, appendix) or 4 without appendix"
        )
    info = _json_part(frames, 1, "data description")
    if type(info) is not dict:
        raise EigerLegacyDecodeError(
            f"Eiger legacy image part 2 (data description) is a JSON {type(info).__name__}, "
            "expected an object"
        )
    config = _json_part(frames, 3, "config")
    raw = frames[2]
    buffer = raw.buffer if isinstance(raw, zmq.Frame) else memoryview(raw)
    if not buffer.readonly:
        buffer = buffer.toreadonly()
    encoding = info.get("encoding")
    holder = None
    if encoding == "<" or encoding == ">":
        holder = ArrayHolder(_view(info, buffer, encoding, head))
    info["buffer"] = buffer
    more = {"data": info, "config": config}
    private = {"_array": holder}
    frame = head.get("frame")
    if type(frame) is int:
        # Fields first, in 0.2's order, so dumps and reprs read as 0.2's do.
        values = {"htype": "dimage-1.0", "frame": frame, **head}
        packet: EigerLegacyImage = new_model(EigerLegacyImage, values, _IMAGE_FIELDS, private,
                                             more)
        return packet
    checked = _validated(EigerLegacyImage, head)  # 0.2's lax rules ("3" is frame 3)
    for key, value in more.items():
        setattr(checked, key, value)
    checked.__pydantic_private__ = private
    return checked


def _view(info: dict[str, Any], buffer: memoryview, encoding: Literal["<", ">"],
          head: dict[str, Any]) -> np.ndarray[Any, Any]:
    """The uncompressed image part as an array, after checking it against part 2."""
    where = f"Eiger legacy image frame={short(head.get('frame'))} part 2 (data description)"
    shape = info.get("shape")
    typ = info.get("type")
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise EigerLegacyDecodeError(
            f"{where}: field 'shape' is {short(shape)}, expected a list of sizes"
        )
    if type(typ) is not str:
        raise EigerLegacyDecodeError(f"{where}: field 'type' is {short(typ)}, expected a dtype")
    dtype = _dtypes.get((typ, encoding))
    if dtype is None:
        dtype = _resolve_dtype(typ, encoding, where)
    size = info.get("size")
    if size is not None and size != buffer.nbytes:
        raise EigerLegacyDecodeError(
            f"{where}: field 'size' is {short(size)}, but the image part (part 3) has "
            f"{buffer.nbytes} bytes"
        )
    try:
        return image_view(buffer, dtype, shape[::-1])
    except DecodeError as exc:
        raise EigerLegacyDecodeError(
            f"{where}: field 'shape' {shape} of type {typ!r} does not fit the image part "
            f"(part 3, {buffer.nbytes} bytes): {exc}"
        ) from None


def _resolve_dtype(typ: str, encoding: Literal["<", ">"], where: str) -> np.dtype[Any]:
    """Plain integer or float dtypes only, in the byte order the encoding names."""
    try:
        dtype = plain_dtype(typ)
    except DtypeRefused as exc:
        raise EigerLegacyDecodeError(f"{where}: field 'type' {short(typ)} {exc}") from None
    if dtype.kind not in _PLAIN_KINDS:
        raise EigerLegacyDecodeError(
            f"{where}: field 'type' {short(typ)} is not an integer or float type"
        )
    dtype = dtype.newbyteorder(encoding)
    if len(_dtypes) < _DTYPE_CACHE_MAX:
        _dtypes[(typ, encoding)] = dtype
    return dtype


def _json_part(frames: list[Any], index: int, what: str) -> Any:
    """Part ``index + 1`` decoded as JSON (NaN and Infinity read as 0.2 reads them)."""
    try:
        return json_value(frames[index])
    except JsonRefused as exc:
        raise EigerLegacyDecodeError(f"Eiger legacy part {index + 1} ({what}) is {exc}") from None


def _validated(cls: type[EigerLegacyImage], head: dict[str, Any]) -> EigerLegacyImage:
    """pydantic's lax validation (0.2's rules), with errors that name the field."""
    try:
        return cls.model_validate(head)
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in err['loc'])!r}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise EigerLegacyDecodeError(f"Eiger legacy part 1 (message header): {problems}") from None
