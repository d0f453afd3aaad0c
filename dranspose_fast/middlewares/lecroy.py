"""Parser of LeCroy MAUI oscilloscope event messages for workers: ``parse(data)``.

An event message is a control message (``LecroyPrepare``, ``LecroyEnd``: returned as they
are) or one sequence as the ingester forms it: the sequence start, three frames per channel
(JSON metadata, raw waveforms, pickled timestamps) and the sequence end, ``1 + 3 * nchannels
+ 1`` frames.  The waveforms become numpy views of the received frames (no copy; an array
keeps its frame alive).

The timestamps are pickled by the streamer.  dranspose 0.2 read them with ``pickle.loads``,
which runs any code a pickle names; here they go through ``dranspose_fast.helpers.safe_pickle``
(plain builtins and numpy data only), and a pickle naming anything else is refused.

JSON frames are decoded with ``msgspec`` and, when every field already has its declared type,
turned into models without pydantic validation; any other frame goes through 0.2's pydantic
union, so what 0.2 accepted is still accepted and the error names the field.
"""

from __future__ import annotations

import logging
from typing import Any, Final, TypeVar

import msgspec
import numpy as np
import zmq
from pydantic import ValidationError

from dranspose_fast._stins import image_view, new_model
from dranspose_fast.data.lecroy import (
    LECROY_TYPE,
    LecroyBase,
    LecroyData,
    LecroyEnd,
    LecroyPacket,
    LecroyParsed,
    LecroyPrepare,
    LecroySeqEnd,
    LecroySeqStart,
    WhatEnum,
)
from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData
from dranspose_fast.helpers.safe_pickle import UnsafePickleError
from dranspose_fast.helpers.safe_pickle import loads as safe_loads
from dranspose_fast.middlewares._json_and_dtypes import DTYPES, DtypeRefused, plain_dtype, short

__all__ = [
    "LecroyDecodeError", "decode_header", "logger", "parse", "parse_trace",
]

logger = logging.getLogger(__name__)

_json_decode = msgspec.json.decode
_START_FIELDS: Final = frozenset({"frame", "htype", "what", "ntriggers", "seqno", "channels"})
_PREPARE_FIELDS: Final = frozenset({"frame", "htype", "what"})
_END_FIELDS: Final = frozenset({"frame", "frames", "what"})
_TRACE_FIELDS: Final = frozenset(
    {"frame", "htype", "ch", "ts", "shape", "dtype", "horiz_offset", "horiz_interval"})
_B = TypeVar("_B", bound=LecroyBase)


class LecroyDecodeError(DecodeError):
    """A LeCroy frame could not be read; the message names the frame and field."""


def parse(data: StreamData) -> LecroyPrepare | LecroyEnd | LecroyParsed:
    """Decode one LeCroy event message.

    Parameters
    ----------
    data : StreamData
        ``typ=LECROY_TYPE``; frames are ``bytes`` or ``zmq.Frame``.

    Returns
    -------
    LecroyPrepare | LecroyEnd | LecroyParsed
        The control packet for a start or end event; for a sequence a ``LecroyParsed`` with
        the start's fields and per channel ``meta`` (``LecroyData``), ``data`` (a numpy view
        of the waveform frame, ``meta.shape`` of ``meta.dtype``) and ``timestamps``.

    Raises
    ------
    LecroyDecodeError
        wrong typ, no frames, a frame that is not valid JSON or not the expected message, a
        frame count other than ``1 + 3 * len(channels) + 1``, a waveform frame whose size does
        not match its shape and dtype, or a timestamp pickle that is corrupt or not plain data.
    """
    if data.typ != LECROY_TYPE:
        raise LecroyDecodeError(
            f"LeCroy parse got StreamData of typ {data.typ!r}, expected {LECROY_TYPE!r}")
    frames = data.frames
    if not frames:
        raise LecroyDecodeError("LeCroy message has no frames, expected a JSON header in frame 0")
    start = decode_header(frames[0], 0)
    if isinstance(start, LecroyPrepare | LecroyEnd):
        return start
    if not isinstance(start, LecroySeqStart):
        raise LecroyDecodeError(
            f"LeCroy frame 0 is a {type(start).__name__}, expected a sequence start "
            "(htype 'msg', what 1), a prepare (what 0) or an end (what 3)")
    channels = start.channels
    nch = len(channels)
    if len(frames) != 1 + 3 * nch + 1:
        raise LecroyDecodeError(
            f"LeCroy sequence seqno={start.seqno} has {len(frames)} frames, "
            f"expected {1 + 3 * nch + 1}: the start, 3 per channel for the {nch} channels "
            f"{channels} (field 'channels'), and the end")
    metas: list[LecroyData] = []
    arrays: list[np.ndarray[Any, Any]] = []
    stamps: list[Any] = []
    for ich in range(nch):
        offset = 1 + 3 * ich
        meta, array, ts = parse_trace(frames, offset)
        metas.append(meta)
        arrays.append(array)
        stamps.append(ts)
    fields = {name: start.__dict__[name] for name in LecroySeqStart.model_fields}
    fields["meta"] = metas
    fields["data"] = arrays
    fields["timestamps"] = stamps
    parsed: LecroyParsed = new_model(LecroyParsed, fields, _PARSED_FIELDS, None)
    # As in 0.2 (LecroyParsed(**start)): the lists were filled in, not given.
    object.__setattr__(parsed, "__pydantic_fields_set__", set(_START_FIELDS))
    return parsed


def parse_trace(
    frames: list[Any], offset: int = 0, meta: LecroyBase | None = None
) -> tuple[LecroyData, np.ndarray[Any, Any], Any]:
    """The metadata, waveform view and timestamps of the traces at ``frames[offset:offset+3]``.

    ``meta`` is the already decoded ``frames[offset]``, if the caller has it.

    Raises
    ------
    LecroyDecodeError
        naming the frame index (counted from the start of ``frames``) and the field.
    """
    if meta is None:
        meta = decode_header(frames[offset], offset)
    if type(meta) is not LecroyData:
        raise LecroyDecodeError(
            f"LeCroy frame {offset} is a {type(meta).__name__}, expected trace metadata "
            "(htype 'traces')")
    array = _waveforms(frames[offset + 1], meta, offset + 1)
    wire = frames[offset + 2]
    try:
        stamps = safe_loads(wire.buffer if isinstance(wire, zmq.Frame) else wire)
    except UnsafePickleError as exc:
        raise LecroyDecodeError(
            f"LeCroy frame {offset + 2} (timestamps of ch {meta.ch}): {exc}") from None
    except TypeError:
        raise LecroyDecodeError(
            f"LeCroy frame {offset + 2} (timestamps of ch {meta.ch}) is a "
            f"{type(wire).__name__}, expected bytes or zmq.Frame") from None
    return meta, array, stamps


def decode_header(frame: Any, index: int = 0) -> LecroyBase:
    """The packet in one JSON frame: a control message or trace metadata.

    Raises
    ------
    LecroyDecodeError
        if it is not valid JSON or no LeCroy message; names frame ``index`` and the field.
    """
    raw = frame.buffer if isinstance(frame, zmq.Frame) else frame
    try:
        obj = _json_decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return _validated(raw, index)  # JSON msgspec refuses (huge ints): pydantic decides
    except TypeError:
        raise LecroyDecodeError(
            f"LeCroy frame {index} is a {type(frame).__name__}, expected bytes or zmq.Frame"
        ) from None
    if type(obj) is not dict:
        raise LecroyDecodeError(
            f"LeCroy frame {index} is a JSON {type(obj).__name__}, expected an object")
    get = obj.get
    htype = get("htype")
    frame_no = get("frame")
    if type(frame_no) is int:
        if htype == "traces":
            shape = get("shape")
            if (type(get("ch")) is int and type(get("ts")) is float and type(shape) is list
                    and all(type(d) is int for d in shape) and type(get("dtype")) is str
                    and type(get("horiz_offset")) is float
                    and type(get("horiz_interval")) is float):
                return _model(LecroyData, obj, _TRACE_FIELDS)
        elif htype == "msg" or htype is None:
            what = get("what")
            if what == 0 and type(what) is int and htype is not None:
                return _model(LecroyPrepare, obj, _PREPARE_FIELDS, WhatEnum.PREPARE)
            if what == 1 and type(what) is int and htype is not None:
                channels = get("channels")
                if (type(get("ntriggers")) is int and type(get("seqno")) is int
                        and type(channels) is list and all(type(c) is int for c in channels)):
                    return _model(LecroySeqStart, obj, _START_FIELDS, WhatEnum.START)
            elif what == 2 and type(what) is int and htype is not None:
                return _model(LecroySeqEnd, obj, _PREPARE_FIELDS, WhatEnum.SEQEND)
            elif what == 3 and type(what) is int and type(get("frames")) is int:
                return _model(LecroyEnd, obj, _END_FIELDS, WhatEnum.STOP)
    return _validated(raw, index)


def _model(cls: type[_B], obj: dict[str, Any], names: frozenset[str],
           what: WhatEnum | None = None) -> _B:
    """``cls`` from checked values, fields in declaration order, undeclared keys dropped."""
    fields = {name: obj[name] for name in cls.model_fields if name in names}
    if what is not None:
        fields["what"] = what
    return new_model(cls, fields, names, None)


_PARSED_FIELDS: Final = frozenset(LecroyParsed.model_fields)


def _validated(raw: Any, index: int) -> LecroyBase:
    """dranspose 0.2's path (pydantic on the union of JSON packets), errors naming the field."""
    try:
        packet: LecroyBase = LecroyPacket.validate_json(bytes(raw))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise LecroyDecodeError(
                f"LeCroy frame {index} is not valid JSON: {errors[0]['msg']}") from None
        problems = "; ".join(
            f"{err['loc'][0]}.{'.'.join(str(p) for p in err['loc'][1:])}: {err['msg']}"
            for err in errors[:6])
        raise LecroyDecodeError(
            f"LeCroy frame {index} is no LeCroy message (htype 'msg' or 'traces'): "
            f"{problems}") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise LecroyDecodeError(f"LeCroy frame {index}: {type(exc).__name__}: {exc}") from None
    return packet


def _waveforms(frame: Any, meta: LecroyData, index: int) -> np.ndarray[Any, Any]:
    """A view of the waveform frame, ``meta.shape`` of ``meta.dtype``; its size must match."""
    dtype = DTYPES.get(meta.dtype)
    if dtype is None:
        dtype = _resolve_dtype(meta.dtype, index - 1)
    buf = frame.buffer if type(frame) is not bytes and isinstance(frame, zmq.Frame) else frame
    try:
        return image_view(buf, dtype, meta.shape)
    except DecodeError as exc:
        raise LecroyDecodeError(
            f"LeCroy frame {index} (waveforms of ch {meta.ch}, fields 'shape' {meta.shape} and "
            f"'dtype' {meta.dtype!r} of frame {index - 1}): {exc}") from None


def _resolve_dtype(name: str, index: int) -> np.dtype[Any]:
    """numpy dtype for the ``dtype`` field; plain fixed-size types only (no objects, records)."""
    try:
        return plain_dtype(name)
    except DtypeRefused as exc:
        raise LecroyDecodeError(
            f"LeCroy frame {index}: field 'dtype' = {short(name)} {exc}") from None
