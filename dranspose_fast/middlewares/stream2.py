"""Parser of DECTRIS Stream V2 messages for workers: ``parse(data)``.

The message (one CBOR item) is decoded by the compiled ``dranspose_fast._stream2``: images
that were sent uncompressed become read-only numpy views of the received frame (no copy),
``bslz4`` and ``lz4`` compressed ones are decompressed once by DECTRIS' own decoder
(``dectris-compression``).  Image messages, the hot path, are checked field by field and
their model built without re-validation; start messages (one per series) go through
pydantic, so each field's type is checked and named in the error.

Example (a worker's ``process_event``)::

    from dranspose_fast.data.stream2 import Stream2Image
    from dranspose_fast.middlewares.stream2 import parse

    msg = parse(event.streams["eiger"])
    if isinstance(msg, Stream2Image):
        image = msg.data["threshold_1"]     # numpy (rows, columns)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import numpy as np
from pydantic import ValidationError

from dranspose_fast._stins import new_model
from dranspose_fast._stream2 import Stream2DecodeError, Tagged, decode
from dranspose_fast.data.stream2 import Rational, Stream2End, Stream2Image, Stream2Start
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares._json_and_dtypes import short

__all__ = ["TYP", "Stream2DecodeError", "parse"]

#: The ``StreamData.typ`` of Stream V2 messages, as ``ZmqPullStream2Ingester`` forwards them.
TYP: Final = "STREAM2"

_IMAGE_FIELDS: Final = frozenset(Stream2Image.model_fields)
_END_FIELDS: Final = frozenset(Stream2End.model_fields)
_TIMES: Final = ("real_time", "start_time", "stop_time")


def parse(data: StreamData) -> Stream2Start | Stream2Image | Stream2End:
    """Decode one Stream V2 message.

    Parameters
    ----------
    data : StreamData
        ``typ="STREAM2"`` with one frame (``bytes`` or ``zmq.Frame``): the CBOR message.

    Returns
    -------
    Stream2Start | Stream2Image | Stream2End
        By the message's ``type``; fields the interface description does not list are kept
        as extras.

    Raises
    ------
    Stream2DecodeError
        naming the field: not CBOR, a wrong tag, an array whose byte count does not fit its
        shape and type, an unknown compression, a missing or mistyped field, an unknown
        message ``type``.
    """
    if data.typ != TYP:
        raise _error("", f"parse got StreamData of typ {data.typ!r}, expected {TYP!r}")
    frames = data.frames
    if len(frames) != 1:
        raise _error("", f"a message is one frame, this StreamData has {len(frames)}")
    msg = decode(frames[0])
    if type(msg) is not dict:
        raise _error("", f"the message is a CBOR {type(msg).__name__}, expected a map")
    kind = msg.get("type")
    if kind == "image":
        return _image(msg)
    if kind == "start":
        return _start(msg)
    if kind == "end":
        _require_int(msg, "series_id")
        _optional_str(msg, "series_unique_id")
        end: Stream2End = new_model(Stream2End, msg, _END_FIELDS, None)
        return end
    if kind is None:
        raise _error("type", "missing")
    raise _error("type", f"{short(kind)} is no Stream V2 message type ('start', 'image', 'end')")


def _image(msg: dict[str, Any]) -> Stream2Image:
    _require_int(msg, "series_id")
    _require_int(msg, "image_id")
    _optional_str(msg, "series_unique_id")
    channels = msg.get("data")
    if type(channels) is not dict:
        raise _error("data", "missing" if channels is None else
                     f"is a {_kind(channels)}, expected a map of channel name to image")
    for name, array in channels.items():
        if type(array) is not np.ndarray:
            raise _error(f'data["{name}"]', f"is a {_kind(array)}, expected a multi-dimensional "
                         "array (tag 40 or 1040)")
    for field in _TIMES:
        value = msg.get(field)
        if value is not None:
            msg[field] = _rational(field, value)
    date = msg.get("series_date")
    if date is not None and type(date) is not datetime:
        raise _error("series_date", f"is a {_kind(date)}, expected a date-time (tag 0)")
    image: Stream2Image = new_model(Stream2Image, msg, _IMAGE_FIELDS, None)
    return image


def _start(msg: dict[str, Any]) -> Stream2Start:
    try:
        return Stream2Start.model_validate(msg)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = err["loc"]
        # the decoder's path style: data["threshold_1"], channels[2]
        field = str(loc[0]) + "".join(f'["{p}"]' if isinstance(p, str) else f"[{p}]"
                                      for p in loc[1:])
        raise _error(field, f"{err['msg']} (got {short(err.get('input'))})") from None


def _rational(field: str, value: Any) -> Rational:
    if (type(value) is list and len(value) == 2 and type(value[0]) is int
            and type(value[1]) is int and value[1] > 0):
        return tuple.__new__(Rational, value)  # checked: skip NamedTuple's Python __new__
    raise _error(field, f"is {short(value)}, expected a rational [numerator, denominator > 0]")


def _require_int(msg: dict[str, Any], field: str) -> None:
    value = msg.get(field)
    if type(value) is not int or value < 0:
        raise _error(field, "missing" if value is None else
                     f"is {short(value)}, expected an unsigned integer")


def _optional_str(msg: dict[str, Any], field: str) -> None:
    value = msg.get(field)
    if value is not None and type(value) is not str:
        raise _error(field, f"is {short(value)}, expected a text string")


def _kind(value: Any) -> str:
    if isinstance(value, Tagged):
        return f"CBOR item with tag {value.tag}"
    return type(value).__name__


def _error(field: str, problem: str) -> Stream2DecodeError:
    return Stream2DecodeError(field, problem, -1)
