"""A 0.2-style worker and reducer for every recorded protocol, runnable by both packages.

The same source runs under dranspose-fast (live ensemble, our replay) and under dranspose 0.2
(its replay, in its own venv): the package is ``PROTO_CLASSES_IMPL`` if set, else
``dranspose_fast`` when importable, else ``dranspose``.  Only the import prefix differs, as for
a user's classes.

The worker parses each stream with the protocol's own parser (``middlewares.<x>.parse``;
AlbaEM has none: ``data.albaem.AlbaemPacket``) and returns a canonical summary of what the
parser returned: the class name, every field and extra (numbers, strings, nested models),
arrays as dtype, shape, sum and MD5 of their bytes, byte strings as length and MD5.  The
reducer keeps one entry per event (identical results from a broadcast event collapse into one)
and publishes them at ``finish`` as one JSON string, so publishes from any runner compare
with ``==``.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import importlib
import importlib.util
import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel

IMPL = os.environ.get("PROTO_CLASSES_IMPL") or (
    "dranspose_fast" if importlib.util.find_spec("dranspose_fast") is not None else "dranspose"
)

#: Significant digits kept of the sum of a float array (it may differ in the last bits
#: between numpy builds; the values themselves are compared through the MD5 of the bytes).
SUM_DIGITS = 12


def _module(name: str) -> Any:
    return importlib.import_module(f"{IMPL}.{name}")


def _raw(frame: Any) -> bytes:
    """The bytes of a frame: a zmq.Frame (live), bytes or a buffer (dumps)."""
    inner = getattr(frame, "bytes", None)
    return inner if isinstance(inner, bytes) else bytes(frame)


def _parse_albaem(data: Any) -> Any:
    # 0.2 has no AlbaEM middleware: its users validate the one JSON frame
    return _module("data.albaem").AlbaemPacket.validate_json(_raw(data.frames[0]))


def parser_for(typ: str) -> Callable[[Any], Any]:
    """The parse function of a ``StreamData.typ`` (imported on first use)."""
    if typ == "albaem":
        return _parse_albaem
    names = {"xspress": "xspress", "PCAP": "pcap", "EIGER_LEGACY": "eiger_legacy",
             "contrast": "contrast", "STREAM2": "stream2"}  # STREAM2: ours only
    if typ in names:
        return _module(f"middlewares.{names[typ]}").parse  # type: ignore[no-any-return]
    if typ.startswith("lecroy") and typ == _module("data.lecroy").LECROY_TYPE:
        return _module("middlewares.lecroy").parse  # type: ignore[no-any-return]
    raise ValueError(f"no parser for stream typ {typ!r}")


def _float(value: float, digits: int | None = None) -> Any:
    if not math.isfinite(value):
        return repr(value)
    return value if digits is None else float(f"{value:.{digits}g}")


def _digest(buf: bytes | memoryview) -> str:
    return hashlib.md5(buf).hexdigest()


def canon(value: Any) -> Any:
    """A JSON-able summary of a parsed value that two equal parses share exactly."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, enum.Enum):
        return canon(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.kind in "iub":
            total: Any = int(arr.sum(dtype=np.int64)) if arr.size else 0
        elif arr.dtype.kind in "fc":
            wide = np.complex128 if arr.dtype.kind == "c" else np.float64
            total = _float(float(np.real(arr.sum(dtype=wide))), SUM_DIGITS)
        else:
            total = None
        return {"ndarray": arr.dtype.str, "shape": list(arr.shape), "sum": total,
                "md5": _digest(arr.tobytes())}
    if isinstance(value, np.generic):
        return canon(value.item())
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return {"bytes": len(raw), "md5": _digest(raw)}
    if hasattr(value, "bytes") and type(value).__name__ == "Frame":
        return canon(value.bytes)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canon(v) for v in value]
    if isinstance(value, BaseModel):  # its fields and its extras
        return {"__class__": type(value).__name__, **{k: canon(v) for k, v in value}}
    return {"__type__": type(value).__name__, "str": str(value)}


def summarise(data: Any) -> dict[str, Any]:
    """What one stream of one event holds, as its protocol's parser reads it."""
    out: dict[str, Any] = {"typ": data.typ, "frames": len(data.frames)}
    try:
        out["parsed"] = canon(parser_for(data.typ)(data))
    except Exception as exc:  # the summary says so; the comparison then shows it
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


class ProtoWorker:
    """Parses every stream of an event with its protocol's parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.name = kwargs["state"].name if "state" in kwargs else "worker"

    def process_event(self, event: Any, parameters: Any = None, tick: bool = False) -> Any:
        return {"event": event.event_number,
                "streams": {str(n): summarise(d) for n, d in event.streams.items()}}

    def finish(self, parameters: Any = None) -> None:
        pass


class ProtoReducer:
    """Collects one summary per event; ``publish["summary"]`` is set (JSON) at ``finish``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.events: dict[int, set[str]] = {}
        self.publish: dict[str, Any] = {"finished": 0, "streams": "", "summary": "{}"}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        payload = result.payload
        if payload["event"] != result.event_number:
            payload = {**payload, "mismatch": result.event_number}
        text = json.dumps(payload, sort_keys=True)
        self.events.setdefault(int(result.event_number), set()).add(text)

    def finish(self, parameters: Any = None) -> None:
        summary = {str(evn): [json.loads(t) for t in sorted(texts)]
                   for evn, texts in sorted(self.events.items())}
        streams = sorted({s for texts in self.events.values() for t in texts
                          for s in json.loads(t)["streams"]})
        self.publish["summary"] = json.dumps(summary, sort_keys=True)
        self.publish["streams"] = ",".join(streams)
        self.publish["finished"] = 1
