"""Parser of PandA PCAP frames for workers: ``parse(data) -> PCAPStart | PCAPData | PCAPEnd``.

The hot path is one ``msgspec`` JSON decode, exact type checks of the declared fields and a
model built without re-validation; the captured fields stay as decoded (scalars for the rows
the ingester sends, lists for an unsplit upstream block).  Messages whose fields are not of the
exact type, and every ``series-start`` (its ``arm_time`` is a datetime), go through pydantic,
so whatever dranspose 0.2 accepted is still accepted.  JSON that ``msgspec`` rejects but
Python's ``json`` reads (``NaN``, ``Infinity``, numbers beyond a double) is read as 0.2 read it.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import ValidationError

from dranspose_fast._stins import new_model
from dranspose_fast.data.pcap import (
    PCAPData,
    PCAPDecodeError,
    PCAPEnd,
    PCAPPacket,
    PCAPStart,
)
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares._json_and_dtypes import JsonRefused, json_object, short

__all__ = ["PCAPDecodeError", "parse"]

_TYP: Final = "PCAP"
_DATA_FIELDS: Final = frozenset({"message_id", "version", "message_type", "frame_number"})
_END_FIELDS: Final = frozenset({"message_id", "version", "message_type"})
_KNOWN_TYPES: Final = ("series-start", "data", "series-end")


def parse(data: StreamData) -> PCAPStart | PCAPData | PCAPEnd:
    """Decode the single frame of one PCAP message.

    Parameters
    ----------
    data : StreamData
        ``typ="PCAP"`` with one frame (``bytes`` or ``zmq.Frame``) holding a JSON object.

    Returns
    -------
    PCAPStart | PCAPData | PCAPEnd
        By ``message_type``; captured fields are extras (``row.energy``).

    Raises
    ------
    PCAPDecodeError
        A ``DecodeError`` naming what is wrong: typ, frame count, invalid JSON (with its
        position), a JSON value that is not an object, an unknown ``message_type``, or a
        missing or mistyped field.
    """
    if data.typ != _TYP:
        raise PCAPDecodeError(f"PCAP parse got StreamData of typ {data.typ!r}, expected 'PCAP'")
    frames = data.frames
    if len(frames) != 1:
        raise PCAPDecodeError(f"PCAP message has {len(frames)} frames, expected 1 (JSON)")
    return _packet_of(decode_object(frames[0]))


def decode_object(frame: Any) -> dict[str, Any]:
    """The JSON object in ``frame`` (``bytes``, ``zmq.Frame`` or another buffer).

    Raises
    ------
    PCAPDecodeError
        if the frame is not JSON or not an object.
    """
    try:
        return json_object(frame)
    except JsonRefused as exc:
        raise PCAPDecodeError(f"PCAP frame 0 is {exc}") from None


def _packet_of(msg: dict[str, Any]) -> PCAPStart | PCAPData | PCAPEnd:
    """The model of a decoded message (the dict is consumed: it may become the model's)."""
    kind = msg.get("message_type")
    if kind == "data":
        if _exact_header(msg) and type(msg.get("frame_number")) is int:
            fields = {"message_id": msg.pop("message_id"), "version": msg.pop("version"),
                      "message_type": msg.pop("message_type"),
                      "frame_number": msg.pop("frame_number")}
            return new_model(PCAPData, fields, _DATA_FIELDS, None, msg)
    elif kind == "series-end":
        if _exact_header(msg):
            fields = {"message_id": msg.pop("message_id"), "version": msg.pop("version"),
                      "message_type": msg.pop("message_type")}
            return new_model(PCAPEnd, fields, _END_FIELDS, None, msg)
    elif kind != "series-start":
        if kind is None:
            raise PCAPDecodeError("PCAP message has no 'message_type' field")
        raise PCAPDecodeError(f"PCAP field 'message_type' is {short(kind, 60)}, "
                              f"expected one of {', '.join(map(repr, _KNOWN_TYPES))}")
    return validated(msg)


def _exact_header(msg: dict[str, Any]) -> bool:
    version = msg.get("version")
    return type(msg.get("message_id")) is int and type(version) is int and version == 1


def validated(msg: Any) -> PCAPStart | PCAPData | PCAPEnd:
    """Pydantic's verdict on a decoded message (the slow path, and 0.2's rules).

    Raises
    ------
    PCAPDecodeError
        naming the first field pydantic rejects.
    """
    try:
        return PCAPPacket.validate_python(msg)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        kind = msg.get("message_type") if isinstance(msg, dict) else None
        field = ".".join(loc[1:] if kind is not None and loc and loc[0] == kind else loc)
        raise PCAPDecodeError(
            f"PCAP {kind or 'message'!s}: field {field or '?'!r}: {err['msg']}") from None
