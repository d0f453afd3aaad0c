"""Data containers users see: StreamData, EventData, InternalWorkerMessage, ResultData.

They are the dranspose 0.2 pydantic models, so user code that builds or inspects them keeps
working.  The framework itself never validates them per event: the ``make_*`` helpers build
instances directly from values that compiled code already checked (pydantic's
``model_construct`` does the same, only slower).  They are the package's own (not in
``__all__``): they live here, beside the classes whose fields they fill, because this module
uses them itself (``get_bytes``, ``from_internals``, the CBOR tag hook), so a home elsewhere
would import back into this module.

Frames are ``bytes`` below ``zmq.COPY_THRESHOLD`` (64 KiB) and zero-copy ``zmq.Frame`` views at
and above it, live and in replay alike, so ``isinstance(f, zmq.Frame)`` checks written for
dranspose 0.2 take the right branch.
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from typing import Any

import zmq
from cbor2 import CBORTag
from pydantic import BaseModel, ConfigDict, Field, computed_field

from dranspose_fast.protocol import EventNumber, HashDigest, StreamName, WorkerName

__all__ = [
    "TAG_INTERNAL_MESSAGE", "TAG_SELF_DESCRIBED", "TAG_STREAM_DATA", "EventData", "Frame",
    "InternalWorkerMessage", "ResultData", "StreamData", "message_encoder", "message_tag_hook",
]

Frame = zmq.Frame | bytes

# Tags of dranspose 0.2's dump format (``dump.py``): self-described CBOR, internal message,
# stream data.
TAG_SELF_DESCRIBED = 55799
TAG_INTERNAL_MESSAGE = 42877
TAG_STREAM_DATA = 42878


class StreamData(BaseModel):
    """All frames of one stream for one event; ``typ`` names the protocol (``STINS``, ...)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    typ: str
    frames: list[zmq.Frame] | list[bytes]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def length(self) -> int:
        return len(self.frames)

    def get_bytes(self) -> StreamData:
        """A copy whose frames are all ``bytes``."""
        return make_stream_data(
            self.typ, [f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in self.frames]
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class InternalWorkerMessage(BaseModel):
    """A partial event: the streams one ingester (or one dump file) holds for an event."""

    event_number: EventNumber
    streams: dict[StreamName, StreamData] = {}
    created_at: datetime = Field(default_factory=_utcnow)

    def get_all_frames(self) -> list[Frame]:
        return [frame for stream in self.streams.values() for frame in stream.frames]


class EventData(BaseModel):
    """One event as the worker's ``process_event`` receives it."""

    event_number: EventNumber
    streams: dict[StreamName, StreamData]

    @property
    def rebound_from(self) -> WorkerName | None:
        """The worker this event was first given to, when that worker died before the event
        was released and it was resent to this one (``None`` for every other event).

        A stateful class sees the rest of a constraint group here without its earlier
        events, which the lost worker saw (docs/writing-classes.md). Not a model field:
        0.2 code that dumps or compares events sees the two fields it always saw.
        """
        return _REBOUND.get(id(self)) if _REBOUND else None

    @classmethod
    def from_internals(cls, msgs: list[InternalWorkerMessage]) -> EventData:
        """Merge partial events of one event number with disjoint streams."""
        if not msgs:
            raise ValueError("merge at least one message")
        numbers = {m.event_number for m in msgs}
        if len(numbers) != 1:
            raise ValueError(f"cannot merge data from events {sorted(numbers)}")
        streams: dict[StreamName, StreamData] = {}
        for m in msgs:
            for name, data in m.streams.items():
                if name in streams:
                    raise ValueError(f"cannot merge data with duplicate stream {name!r}")
                streams[name] = data
        return make_event_data(msgs[0].event_number, streams)


class ResultData(BaseModel):
    """A worker's result on its way to the reducer's ``process_result``."""

    event_number: EventNumber
    worker: WorkerName
    parameters_hash: HashDigest | None
    payload: Any


# === Construction without validation (hot path) ===

# Compiled: fills __dict__ and pydantic's bookkeeping slots directly (see _ext/_batch.pyx).
from dranspose_fast._batch import construct as _construct  # noqa: E402

_STREAM_FIELDS = {"typ", "frames"}
_EVENT_FIELDS = {"event_number", "streams"}
_INTERNAL_FIELDS = {"event_number", "streams", "created_at"}
_RESULT_FIELDS = {"event_number", "worker", "parameters_hash", "payload"}


def make_stream_data(typ: str, frames: list[Any]) -> StreamData:
    obj: StreamData = _construct(StreamData, {"typ": typ, "frames": frames}, _STREAM_FIELDS)
    return obj


def make_event_data(event_number: int, streams: dict[Any, StreamData]) -> EventData:
    values = {"event_number": event_number, "streams": streams}
    obj: EventData = _construct(EventData, values, _EVENT_FIELDS)
    return obj


def make_internal(
    event_number: int, streams: dict[StreamName, StreamData], created_at: datetime | None = None
) -> InternalWorkerMessage:
    values = {
        "event_number": event_number,
        "streams": streams,
        "created_at": created_at if created_at is not None else _utcnow(),
    }
    obj: InternalWorkerMessage = _construct(InternalWorkerMessage, values, _INTERNAL_FIELDS)
    return obj


def make_result(
    event_number: int, worker: str, parameters_hash: str | None, payload: Any
) -> ResultData:
    values = {
        "event_number": event_number,
        "worker": worker,
        "parameters_hash": parameters_hash,
        "payload": payload,
    }
    obj: ResultData = _construct(ResultData, values, _RESULT_FIELDS)
    return obj


#: The events built from resent deliveries, by ``id``, with their origin: a few per lost
#: worker, and each entry leaves with its event (``weakref.finalize``).
_REBOUND: dict[int, WorkerName] = {}


def mark_rebound(event: EventData, origin: str) -> None:
    """Mark ``event`` as resent after its first worker, ``origin``, was lost."""
    key = id(event)
    _REBOUND[key] = WorkerName(origin)
    weakref.finalize(event, _REBOUND.pop, key, None)


# === CBOR hooks (dranspose 0.2's dump format, see ``dump.py``) ===


def message_encoder(encoder: Any, value: Any) -> None:
    """cbor2 ``default`` hook: encode the containers as tags 42877 / 42878."""
    if isinstance(value, InternalWorkerMessage):
        encoder.encode(
            CBORTag(TAG_INTERNAL_MESSAGE, (value.event_number, value.streams, value.created_at))
        )
    elif isinstance(value, StreamData):
        frames = [f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in value.frames]
        encoder.encode(CBORTag(TAG_STREAM_DATA, (value.typ, frames)))
    else:
        raise TypeError(f"cannot CBOR-encode {type(value).__name__}")


def message_tag_hook(*args: Any) -> Any:
    """cbor2 ``tag_hook``: accepts both ``(decoder, tag)`` (cbor2 < 6) and ``(tag, immutable)``."""
    tag = args[0] if isinstance(args[0], CBORTag) else args[1]
    value = tag.value
    if tag.tag == TAG_INTERNAL_MESSAGE and isinstance(value, list | tuple) and len(value) in (2, 3):
        created = value[2] if len(value) == 3 and isinstance(value[2], datetime) else None
        return make_internal(int(value[0]), dict(value[1]), created)
    if tag.tag == TAG_STREAM_DATA and isinstance(value, list | tuple) and len(value) == 2:
        return make_stream_data(str(value[0]), list(value[1]))
    if tag.tag == TAG_SELF_DESCRIBED:
        return value
    return tag
