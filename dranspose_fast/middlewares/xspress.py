"""Parser of Xspress3 messages for workers: ``parse(data) -> XspressStart | XspressImage | ...``.

The hot path is one ``msgspec`` JSON decode of the header, exact type checks of the fields, a
model built without re-validation, a zero-copy numpy view of the spectra frame (its size
checked against ``shape`` and ``type`` by the compiled ``dranspose_fast._stins``) and the
metadata list unpickled.  Headers whose fields are not already of the right type go through
pydantic, so what dranspose 0.2 accepted (``"frame": "3"``) is still accepted.

The metadata frame is a pickle from the network.  dranspose 0.2 ran ``pickle.loads`` on it,
which executes whatever the sender puts in; here ``dranspose_fast.helpers.safe_pickle.loads``
resolves only plain builtins and numpy arrays and refuses anything else.

Unlike 0.2, a header without ``htype`` is refused (0.2 read ``{}`` as a series end) and a
failure raises ``XspressDecodeError`` (a ``ValueError``) instead of an ``AssertionError``.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import msgspec
import numpy as np
import zmq
from pydantic import ValidationError

from dranspose_fast._stins import image_nbytes, image_view, new_model
from dranspose_fast.data.xspress3 import (
    META_NAMES,
    XspressBase,
    XspressDecodeError,
    XspressEnd,
    XspressImage,
    XspressStart,
)
from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData
from dranspose_fast.helpers.safe_pickle import loads as safe_loads
from dranspose_fast.middlewares._json_and_dtypes import DTYPES, DtypeRefused, plain_dtype, short

__all__ = ["XspressDecodeError", "data_nbytes", "decode_header", "parse"]

_TYP: Final = "xspress"
_json_decode = msgspec.json.decode
_START_ORDER: Final = ("htype", "filename")
_IMAGE_ORDER: Final = ("htype", "frame", "shape", "exptime", "type", "compression")
_START_FIELDS: Final = frozenset(_START_ORDER)
_IMAGE_FIELDS: Final = frozenset(_IMAGE_ORDER)
_END_FIELDS: Final = frozenset({"htype"})
_HTYPES: Final = ("header", "image", "series_end")
_M = TypeVar("_M", bound=XspressBase)


def parse(data: StreamData) -> XspressStart | XspressImage | XspressEnd:
    """Decode the frames of one Xspress3 message.

    Parameters
    ----------
    data : StreamData
        ``typ="xspress"``; frames are ``bytes`` or ``zmq.Frame``: the JSON header, and for
        images the spectra and the pickled metadata list.

    Returns
    -------
    XspressStart | XspressImage | XspressEnd
        Images carry ``.data``, a numpy view of the received spectra frame (no copy; it keeps
        the frame alive) of ``shape`` and dtype ``type``, and ``.meta``, a dict from the
        metadata names (``ocr``, ``AllEvents``, ... ``dtc``) to the unpickled arrays.

    Raises
    ------
    XspressDecodeError
        A ``DecodeError`` naming what is wrong and where: typ, frame count, invalid JSON,
        a missing or mistyped field, an unknown htype or dtype, a spectra frame whose size
        does not match ``shape`` and ``type``, or a metadata pickle that is corrupt, not a
        list, or names classes other than plain data.
    """
    if data.typ != _TYP:
        raise XspressDecodeError(
            f"Xspress3 parse got StreamData of typ {data.typ!r}, expected 'xspress'", "typ")
    frames = data.frames
    if not frames:
        raise XspressDecodeError("Xspress3 message has no frames, expected a JSON header",
                                 "frames")
    header = decode_header(frames[0])
    htype = header["htype"]
    if htype == "image":
        return _parse_image(header, frames)
    if htype == "header":
        if type(header.get("filename")) is str:
            return new_model(XspressStart, _ordered(header, _START_ORDER), _START_FIELDS, None)
        return _validated(XspressStart, header)
    return new_model(XspressEnd, header, _END_FIELDS, None)


def decode_header(frame: Any) -> dict[str, Any]:
    """The JSON header of frame 0 as a dict whose ``htype`` is one of the three known.

    Raises
    ------
    XspressDecodeError
        if the frame is not a JSON object or its ``htype`` is missing or unknown.
    """
    try:
        header = _json_decode(memoryview(frame))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise XspressDecodeError(f"Xspress3 header (frame 0) is not valid JSON: {exc}",
                                 "header") from None
    except TypeError:
        raise XspressDecodeError(
            f"Xspress3 header (frame 0) is a {type(frame).__name__}, expected bytes or zmq.Frame",
            "header") from None
    if type(header) is not dict:
        raise XspressDecodeError(
            f"Xspress3 header (frame 0) is a JSON {type(header).__name__}, expected an object",
            "header")
    htype = header.get("htype")
    if type(htype) is not str or htype not in _HTYPES:
        problem = "has no 'htype' field" if htype is None else f"field 'htype' is {short(htype)}"
        raise XspressDecodeError(
            f"Xspress3 header (frame 0) {problem}, expected 'header', 'image' or 'series_end'",
            "htype")
    return header


def data_nbytes(header: dict[str, Any]) -> int:
    """Check a decoded header as ``parse`` would; for an image, the size of its data frame.

    Returns
    -------
    int
        ``prod(shape) * itemsize(type)`` for an image, 0 for a start or end message.

    Raises
    ------
    XspressDecodeError
        if a field is missing or invalid (the error's ``field`` names it).
    """
    htype = header["htype"]
    if htype == "header":
        if type(header.get("filename")) is not str:
            _validated(XspressStart, header)
        return 0
    if htype != "image":
        return 0
    shape, typ, _model = _image_fields(header)
    dtype = DTYPES.get(typ) or _resolve_dtype(typ, header)
    try:
        return image_nbytes(shape, dtype.itemsize)
    except DecodeError as exc:
        raise XspressDecodeError(f"{_where(header)}: field 'shape': {exc}", "shape") from None


def _image_fields(header: dict[str, Any]) -> tuple[list[int], str, XspressImage | None]:
    """``shape`` and ``type`` of a checked image header, and its model if pydantic made one."""
    get = header.get
    shape = get("shape")
    typ = get("type")
    exptime = get("exptime")
    compression = get("compression")
    if type(exptime) is int:
        exptime = header["exptime"] = float(exptime)  # as pydantic turns it into a float
    if (
        type(get("frame")) is int
        and type(shape) is list
        and type(typ) is str
        and (type(exptime) is float or (exptime is None and "exptime" in header))
        and (type(compression) is str or (compression is None and "compression" in header))
        and all(type(d) is int for d in shape)
    ):
        return shape, typ, None
    # Rare: let pydantic coerce (or reject) and fill the defaults, as 0.2 did.
    model = _validated(XspressImage, header)
    return model.shape, model.type, model


def _parse_image(header: dict[str, Any], frames: list[Any]) -> XspressImage:
    shape, typ, model = _image_fields(header)
    if len(frames) != 3:
        raise XspressDecodeError(
            f"{_where(header)}: expected 3 frames (header, data, meta), got {len(frames)}",
            "frames")
    payload = frames[1]
    if type(payload) is not bytes and isinstance(payload, zmq.Frame):
        payload = payload.buffer
    dtype = DTYPES.get(typ) or _resolve_dtype(typ, header)
    try:
        spectra = image_view(payload, dtype, shape)
    except DecodeError as exc:
        field = "shape" if str(exc).startswith("shape") else "data"
        raise XspressDecodeError(f"{_where(header)}: data (frame 1): {exc}", field) from None
    meta = _meta(frames[2], header)
    if model is None:
        return new_model(XspressImage, _ordered(header, _IMAGE_ORDER), _IMAGE_FIELDS, None,
                         {"data": spectra, "meta": meta})
    setattr(model, "data", spectra)  # noqa: B010  (extras, set as 0.2 sets them)
    setattr(model, "meta", meta)  # noqa: B010
    return model


def _meta(frame: Any, header: dict[str, Any]) -> dict[str, Any]:
    """The metadata arrays by name, from the pickled list of frame 2."""
    buf = frame.buffer if isinstance(frame, zmq.Frame) else frame
    try:
        values = safe_loads(buf)
    except DecodeError as exc:
        raise XspressDecodeError(f"{_where(header)}: meta (frame 2): {exc}", "meta") from None
    if type(values) is not list and type(values) is not tuple:
        raise XspressDecodeError(
            f"{_where(header)}: meta (frame 2) is a pickled {type(values).__name__}, "
            "expected a list of arrays", "meta")
    return dict(zip(META_NAMES, values, strict=False))


def _ordered(header: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The header with its fields in the model's order (as validation would give), then extras."""
    ordered = {name: header[name] for name in names}
    if len(header) > len(names):
        ordered.update(header)
    return ordered


def _where(header: dict[str, Any]) -> str:
    """Which image an error is about (built only when raising)."""
    return f"Xspress3 image frame={short(header.get('frame'))}"


def _validated(cls: type[_M], header: dict[str, Any]) -> _M:
    """The pydantic (lax, dranspose 0.2) path, with errors that name the field."""
    try:
        return cls.model_validate(header)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in err['loc'])!r}: {err['msg']}" for err in errors
        )
        field = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else "header"
        raise XspressDecodeError(f"Xspress3 {cls.__name__} header: {problems}", field) from None


def _resolve_dtype(name: str, header: dict[str, Any]) -> np.dtype[Any]:
    """numpy dtype of the ``type`` field: plain fixed-size types only (no objects, records)."""
    try:
        return plain_dtype(name)
    except DtypeRefused as exc:
        raise XspressDecodeError(f"{_where(header)}: field 'type' = {short(name)} {exc}",
                                 "type") from None
