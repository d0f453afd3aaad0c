"""Parser of Sardana frames for workers: ``parse(data) -> SardanaPacketType``.

Each message is one JSON frame (``typ="sardana"``), as ``ingesters.http_sardana`` forwards it.
The hot path is one ``msgspec`` decode, exact type checks of the model's own fields and a
model built without re-validation; anything else (``NaN``/``Infinity`` literals, which
Python's ``json`` writes and dranspose 0.2 read, an integer timestamp to coerce, a missing
``type``) goes through the same pydantic validation as dranspose 0.2, so what 0.2 accepted is
accepted and returns the same model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from dranspose_fast._stins import new_model
from dranspose_fast.data.sardana import (
    SardanaDataDescription,
    SardanaDecodeError,
    SardanaPacket,
    SardanaPacketType,
    SardanaRecordData,
    SardanaRecordEnd,
)
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares._json_and_dtypes import JsonRefused, json_object, short

__all__ = ["SardanaDecodeError", "parse"]

_MODELS: dict[str, type[BaseModel]] = {
    "DataDescription": SardanaDataDescription,
    "RecordData": SardanaRecordData,
    "RecordEnd": SardanaRecordEnd,
}
_DESC_FIELDS = frozenset({"type", "serialno", "scandir", "title"})
_DATA_FIELDS = frozenset({"type", "timestamp"})
_END_FIELDS = frozenset({"type"})


def parse(data: StreamData) -> SardanaPacketType:
    """Decode the frame of one Sardana message.

    Parameters
    ----------
    data : StreamData
        ``typ="sardana"`` with one frame (``bytes`` or ``zmq.Frame``): a JSON object.

    Returns
    -------
    SardanaDataDescription | SardanaRecordData | SardanaRecordEnd
        Chosen by the ``type`` field (by pydantic's union rules when it is absent, as in 0.2);
        unknown fields (column values, ``column_desc``, ...) are attributes.

    Raises
    ------
    SardanaDecodeError
        A ``DecodeError`` naming what is wrong: typ, frame count, invalid JSON, a JSON value
        that is no object, an unknown ``type``, or a missing or mistyped field.
    """
    if data.typ != "sardana":
        raise SardanaDecodeError(
            f"sardana parse got StreamData of typ {data.typ!r}, expected 'sardana'")
    frames = data.frames
    if len(frames) != 1:
        raise SardanaDecodeError(
            f"sardana message has {len(frames)} frames, expected 1 (a JSON object)")
    val = _decode(frames[0])
    kind = val.get("type")
    get = val.get
    if kind == "RecordData":
        if type(get("timestamp")) is float:
            return new_model(SardanaRecordData, _declared_first(val, SardanaRecordData),
                             _DATA_FIELDS, None)
    elif kind == "DataDescription":
        if (type(get("serialno")) is int and type(get("scandir")) is str
                and type(get("title")) is str):
            return new_model(SardanaDataDescription,
                             _declared_first(val, SardanaDataDescription), _DESC_FIELDS, None)
    elif kind == "RecordEnd":
        return new_model(SardanaRecordEnd, _declared_first(val, SardanaRecordEnd), _END_FIELDS,
                         None)
    return _validated(val)


def _declared_first(val: dict[str, Any], cls: type[BaseModel]) -> dict[str, Any]:
    """``val`` with the declared fields first, in their order, as pydantic orders them (the
    ingester re-serialises packets: the bytes must be 0.2's whatever order the sender used)."""
    names = list(cls.model_fields)
    if list(val)[:len(names)] == names:
        return val
    ordered = {name: val[name] for name in names if name in val}
    ordered.update(val)
    return ordered


def _decode(frame: Any) -> dict[str, Any]:
    """The JSON object in ``frame``; Python's ``json`` reads what msgspec refuses (NaN, 1e400)."""
    try:
        return json_object(frame)
    except JsonRefused as exc:
        raise SardanaDecodeError(f"sardana frame 0 is {exc}") from None


def _validated(val: dict[str, Any]) -> SardanaPacketType:
    """The pydantic (dranspose 0.2) path, with errors that name the field."""
    kind = val.get("type", None)
    if "type" in val and (type(kind) is not str or kind not in _MODELS):
        raise SardanaDecodeError(
            f"sardana field 'type' is {short(kind)}, "
            f"expected one of {', '.join(map(repr, _MODELS))}")
    try:
        if kind is None:
            return SardanaPacket.validate_python(val)
        packet: SardanaPacketType = _MODELS[kind].model_validate(val)  # type: ignore[assignment]
        return packet
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in err['loc'])!r}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        what = f"{kind}" if kind is not None else "message without a 'type' field"
        raise SardanaDecodeError(f"sardana {what}: {problems}") from None
