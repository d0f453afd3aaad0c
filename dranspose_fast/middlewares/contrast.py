"""Parser of contrast (NanoMAX scan software) frames for workers: ``parse(data) -> packet``.

contrast pickles each message.  dranspose 0.2 read them with ``pickle.loads``, which runs any
code a pickle names: whoever can publish to the contrast port could run commands in the
ingester and every worker.  Here payloads go through ``dranspose_fast.helpers.safe_pickle``,
which rebuilds only plain builtins, ``datetime`` and numpy arrays and scalars; a pickle that
names anything else (``os.system``...) raises ``ContrastDecodeError``.

The hot path is the unpickling plus exact type checks of the declared fields; the model is
built without pydantic validation.  Messages whose fields are not already of the declared
type (an ``int`` ``dt``) go through pydantic as in 0.2, so 0.2's lax coercions still hold.
"""

from __future__ import annotations

from typing import Any, Final

import zmq
from pydantic import ValidationError

from dranspose_fast._stins import new_model
from dranspose_fast.data.contrast import (
    CONTRAST_TYPE,
    ContrastFinished,
    ContrastHeartbeat,
    ContrastPacket,
    ContrastRunning,
    ContrastStarted,
)
from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData
from dranspose_fast.helpers.safe_pickle import UnsafePickleError
from dranspose_fast.helpers.safe_pickle import loads as safe_loads
from dranspose_fast.middlewares._json_and_dtypes import short

__all__ = ["ContrastDecodeError", "ContrastPacketType", "decode_payload", "parse"]

#: What ``parse`` returns.
ContrastPacketType = ContrastStarted | ContrastRunning | ContrastFinished | ContrastHeartbeat

_RUNNING_FIELDS: Final = frozenset({"status", "dt"})
_SCAN_FIELDS: Final = frozenset({"status", "path", "scannr", "description"})
_HEARTBEAT_FIELDS: Final = frozenset({"status"})
_CLASS_OF_STATUS: Final[dict[str, type[ContrastPacketType]]] = {
    "started": ContrastStarted,
    "running": ContrastRunning,
    "finished": ContrastFinished,
    "heartbeat": ContrastHeartbeat,
}


class ContrastDecodeError(DecodeError):
    """A contrast frame could not be read; the message names the frame and field."""


def parse(data: StreamData) -> ContrastPacketType:
    """Decode the frame of one contrast message.

    Parameters
    ----------
    data : StreamData
        ``typ="contrast"`` with one frame (``bytes`` or ``zmq.Frame``): the pickled dict.

    Returns
    -------
    ContrastStarted | ContrastRunning | ContrastFinished | ContrastHeartbeat
        Chosen by the ``status`` field; undeclared fields are extras, read as attributes.

    Raises
    ------
    ContrastDecodeError
        wrong typ or frame count, a pickle that is corrupt or names a class that is not plain
        data, a payload that is not a dict, an unknown status or a missing or mistyped field.
    """
    if data.typ != CONTRAST_TYPE:
        raise ContrastDecodeError(
            f"contrast parse got StreamData of typ {data.typ!r}, expected {CONTRAST_TYPE!r}")
    frames = data.frames
    if len(frames) != 1:
        raise ContrastDecodeError(
            f"contrast message has {len(frames)} frames, expected 1 (the pickled dict)")
    return decode_payload(frames[0])


def decode_payload(frame: Any) -> ContrastPacketType:
    """The packet in one contrast frame (``bytes``, ``zmq.Frame`` or a buffer).

    Raises
    ------
    ContrastDecodeError
        as ``parse``.
    """
    buf = frame.buffer if isinstance(frame, zmq.Frame) else frame
    try:
        value = safe_loads(buf)
    except UnsafePickleError as exc:
        raise ContrastDecodeError(f"contrast frame 0: {exc}") from None
    except TypeError:
        raise ContrastDecodeError(
            f"contrast frame 0 is a {type(frame).__name__}, expected bytes or zmq.Frame"
        ) from None
    if not isinstance(value, dict):
        raise ContrastDecodeError(
            f"contrast frame 0 holds a pickled {type(value).__name__}, expected a dict")
    status = value.get("status")
    if type(status) is str and all(type(key) is str for key in value):
        if status == "running":
            dt = value.get("dt")
            if type(dt) is float:
                extras = {k: v for k, v in value.items() if k != "status" and k != "dt"}
                running: ContrastRunning = new_model(
                    ContrastRunning, {"status": status, "dt": dt}, _RUNNING_FIELDS, None, extras)
                return running
        elif status == "started" or status == "finished":
            path = value.get("path")
            scannr = value.get("scannr")
            description = value.get("description")
            if type(path) is str and type(scannr) is int and type(description) is str:
                fields = {"status": status, "path": path, "scannr": scannr,
                          "description": description}
                extras = {k: v for k, v in value.items() if k not in _SCAN_FIELDS}
                if status == "started":
                    started: ContrastStarted = new_model(
                        ContrastStarted, fields, _SCAN_FIELDS, None, extras)
                    return started
                finished: ContrastFinished = new_model(
                    ContrastFinished, fields, _SCAN_FIELDS, None, extras)
                return finished
        elif status == "heartbeat":
            beat: ContrastHeartbeat = new_model(
                ContrastHeartbeat, {"status": status}, _HEARTBEAT_FIELDS, None)
            return beat
    return _validated(value)


def _validated(value: dict[Any, Any]) -> ContrastPacketType:
    """dranspose 0.2's path (pydantic on the union), with errors that name the field."""
    try:
        packet: ContrastPacketType = ContrastPacket.validate_python(value)
    except ValidationError as exc:
        status = value.get("status")
        if "status" not in value:
            problems = "; ".join(
                f"{err['loc'][0]} field {'.'.join(str(p) for p in err['loc'][1:])!r}: "
                f"{err['msg']}" for err in exc.errors(include_url=False)[:6])
            raise ContrastDecodeError(
                f"contrast frame 0 has no field 'status' and fits no packet: {problems}"
            ) from None
        cls = _CLASS_OF_STATUS.get(status) if isinstance(status, str) else None
        if cls is None:
            raise ContrastDecodeError(
                f"contrast frame 0: field 'status' is {short(status)}, expected one of "
                f"{', '.join(map(repr, _CLASS_OF_STATUS))}") from None
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in err['loc'][1:])!r}: {err['msg']}"
            for err in exc.errors(include_url=False) if err["loc"][:1] == (cls.__name__,)
        ) or str(exc)
        raise ContrastDecodeError(f"contrast frame 0 ({cls.__name__}): {problems}") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise ContrastDecodeError(f"contrast frame 0: {type(exc).__name__}: {exc}") from None
    return packet
