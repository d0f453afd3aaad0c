"""Every ZeroMQ message of the runtime, built and parsed here and nowhere else.

Layouts (internal; they need not match dranspose 0.2's; docs/protocol.md):

* event batch, ingester → worker ``[b"E", meta, index, payload, big_0, ...]``: ``meta`` is
  the batch's arrival stamp (``time.time()`` when the ingester packed it, float64 little
  endian, 8 bytes) followed by msgpack ``[[stream, typ], ...]`` (``stream_meta``); index and
  payload come from the compiled packers (``_batch.pack``, ``_route.route_pack``). Frames of
  ``ZERO_COPY_THRESHOLD`` bytes or more travel as their own frames, sent zero-copy.
* result batch, worker → reducer ``[b"R", meta, index, payload, scan]``: ``meta`` is msgpack
  ``[worker, parameters_hash, arrival]``, ``arrival`` the oldest stamp of the event batches
  the worker received since its previous result batch (``nil``: none, as in a replay); each
  payload is the pickled return value of ``process_event``, read back by ``decode_result``
  as data only (``helpers.safe_pickle``: plain data, numpy, and the classes of
  ``DFAST_RESULT_CLASSES``); ``scan`` is the 16 bytes of the mapping uuid the results belong
  to (``NO_SCAN`` in a replay).
* hello, worker → ingester ``[b"H", service_uuid, name]`` (16 bytes, UTF-8): the ingester
  binds the name to the connection (and CURVE key) it came from; a replay worker process says
  ``[b"H"]`` to its pool.
* replay pool ↔ worker process: ``[b"P", pickled parameters]``, ``[b"F"]`` (finish),
  ``[b"C", events done (u64 LE)]`` (credit), ``[b"D", msgpack counters]`` (done).

The compiled kernels pack and unpack without policy; the frame layouts are this module's.
"""

from __future__ import annotations

import math
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import zmq

from dranspose_fast import _batch
from dranspose_fast.event import StreamData
from dranspose_fast.helpers import safe_pickle
from dranspose_fast.helpers.safe_pickle import AllowList

#: Frames at least this large are sent as their own zero-copy ZMQ frames; smaller ones are
#: packed (pyzmq copies frames below this size anyway).
ZERO_COPY_THRESHOLD = zmq.COPY_THRESHOLD

EVENTS = b"E"
REBOUND = b"B"
RESULTS = b"R"
HELLO = b"H"
PARAMETERS = b"P"
FINISH = b"F"
CREDIT = b"C"
DONE = b"D"

#: The scan id of results that belong to no mapping (a replay).
NO_SCAN = uuid.UUID(int=0)

_meta_encoder = msgspec.msgpack.Encoder()
_streams_decoder = msgspec.msgpack.Decoder(list[tuple[str, str]])
_result_meta_decoder = msgspec.msgpack.Decoder(
    tuple[str, str | None, float | None, str | None])
#: The arrival stamp that starts an event batch's ``meta`` frame (docs/metrics.md: latency).
_stamp = struct.Struct("<d")

PartialEvent = tuple[int, dict[str, StreamData]]


class StreamTable:
    """Dense ids for the (stream, typ) pairs of one batch."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], int] = {}

    def id(self, name: str, typ: str) -> int:
        key = (name, typ)
        found = self.ids.get(key)
        if found is None:
            found = self.ids[key] = len(self.ids)
        return found

    def meta(self) -> bytes:
        return stream_meta(self.ids)


# === event batches ===


def stream_meta(streams: Iterable[tuple[str, str]]) -> bytes:
    """The ``meta`` frame of an event batch: the (stream, typ) pairs its stream ids name."""
    return _meta_encoder.encode(list(streams))


def event_frames(meta: bytes, index: Any, payload: Any, externals: Sequence[Any]) -> list[Any]:
    """An event batch from what a compiled packer returned (``_batch.pack``, ``_route``),
    stamped with the time now (the frames were read from upstream in this loop pass)."""
    return [EVENTS, _stamp.pack(time.time()) + meta, index, payload, *externals]


def rebound_frames(key: str, origin: str, frames: list[Any]) -> list[Any]:
    """An event batch resent to the worker that took over ``key`` (first bound to the lost
    worker ``origin``): ``[b"B", key, origin, *event batch]``."""
    return [REBOUND, key.encode(), origin.encode(), *frames]


def split_rebound(frames: Sequence[Any]) -> tuple[str, str, Sequence[Any]]:
    """``(key, origin, event batch)`` of a ``rebound_frames`` message."""
    if len(frames) < 7 or _bytes(frames[0]) != REBOUND:
        raise _batch.BatchFormatError(f"not a rebound event batch: {len(frames)} frames")
    return _bytes(frames[1]).decode(), _bytes(frames[2]).decode(), frames[3:]


def encode_events(events: Sequence[PartialEvent]) -> list[Any]:
    """Multipart frames for a batch of (event_number, {stream: StreamData}) to one worker."""
    table = StreamTable()
    entries = [
        (evn, table.id(name, data.typ), [_as_buffer(f) for f in data.frames])
        for evn, streams in events
        for name, data in streams.items()
    ]
    index, payload, externals = _batch.pack(entries, ZERO_COPY_THRESHOLD)
    return event_frames(table.meta(), index, payload, externals)


def _as_buffer(frame: Any) -> Any:
    return frame.buffer if isinstance(frame, zmq.Frame) else frame


def decode_events(frames: Sequence[Any]) -> list[PartialEvent]:
    """Inverse of ``encode_events`` (frames may be ``bytes`` or ``zmq.Frame``)."""
    return decode_event_batch(frames)[1]


def decode_event_batch(frames: Sequence[Any]) -> tuple[float, list[PartialEvent]]:
    """``(arrival stamp, events)`` of an event batch (``decode_events`` with the stamp)."""
    if len(frames) < 4 or _bytes(frames[0]) != EVENTS:
        raise _batch.BatchFormatError(f"not an event batch: {len(frames)} frames")
    meta = _bytes(frames[1])
    if len(meta) < _stamp.size:
        raise _batch.BatchFormatError(f"event batch meta of {len(meta)} bytes has no stamp")
    (arrival,) = _stamp.unpack_from(meta)
    streams = _streams_decoder.decode(memoryview(meta)[_stamp.size:])
    externals = list(frames[4:])
    index = frames[2].buffer if isinstance(frames[2], zmq.Frame) else frames[2]
    payload = frames[3].buffer if isinstance(frames[3], zmq.Frame) else frames[3]
    out: list[PartialEvent] = _batch.unpack(index, payload, externals, streams)
    return arrival, out


def message_bytes(frames: Sequence[Any]) -> int:
    """Bytes of every frame of a message (``bytes`` or ``zmq.Frame``): per batch, for metrics."""
    return sum(map(len, frames))


# === result batches ===


def encode_results(
    worker: str,
    parameters_hash: str | None,
    results: Sequence[tuple[int, bytes]],
    scan: uuid.UUID = NO_SCAN,
    arrival: float | None = None,
    origin: str | None = None,
) -> list[bytes]:
    """A result batch of ``worker`` for the scan ``scan``: ``(event_number, pickle)`` pairs.

    ``arrival`` is the ingester's stamp the reducer measures latency from (not finite or
    ``None``: no stamp). ``origin`` names the lost worker whose events these results are
    of (resent to ``worker``): the reducer takes one result per (event, origin).
    """
    index, payload = _batch.pack_results(list(results))
    stamp = arrival if arrival is not None and math.isfinite(arrival) else None
    return [RESULTS, _meta_encoder.encode((worker, parameters_hash, stamp, origin)), index, payload,
            scan.bytes]


def result_scan(frames: Sequence[Any]) -> uuid.UUID:
    """The scan a result batch belongs to (read before the rest is decoded)."""
    if len(frames) != 5 or _bytes(frames[0]) != RESULTS or len(_bytes(frames[4])) != 16:
        raise _batch.BatchFormatError(
            f"not a result batch: {len(frames)} frames (expected 5 with a 16-byte mapping "
            "uuid last)")
    return uuid.UUID(bytes=_bytes(frames[4]))


def decode_results(frames: Sequence[Any]) -> tuple[str, str | None, list[tuple[int, Any]]]:
    """``(worker, parameters_hash, [(event_number, pickle), ...])`` of a result batch."""
    worker, phash, _arrival, _origin, results = decode_result_batch(frames)
    return worker, phash, results


def decode_result_batch(
    frames: Sequence[Any],
) -> tuple[str, str | None, float | None, str | None, list[tuple[int, Any]]]:
    """``(worker, parameters_hash, arrival, origin, results)``: ``decode_results`` with the
    stamp and the origin."""
    result_scan(frames)
    worker, phash, arrival, origin = _result_meta_decoder.decode(_bytes(frames[1]))
    return worker, phash, arrival, origin, _batch.unpack_results(frames[2], frames[3])


#: Appended to the message of a refused result: where its class is allowed.
RESULT_CLASSES_HINT = ("; a result class must be named in DFAST_RESULT_CLASSES (module:Name) "
                       "where results are read (reducer, replay)")


def result_classes(names: Sequence[str] = ()) -> AllowList:
    """What results may hold: plain data, numpy arrays, dtypes and scalars, and the classes
    ``names`` (``module:Name``, e.g. ``ResultSettings().result_classes``), imported now.

    Raises
    ------
    ValueError
        in one line, naming an entry that is not a class that can be imported.
    """
    return safe_pickle.allow_list(names, hint=RESULT_CLASSES_HINT)


def decode_result(payload: Any, allowed: AllowList) -> Any:
    """One result of a batch (the pickle ``process_event``'s value became), as data only.

    Raises
    ------
    safe_pickle.UnsafePickleError
        if the pickle names a global ``allowed`` does not hold (it never runs), states a
        numpy object numpy would not build itself, or is corrupt; the message names it.
    """
    return safe_pickle.loads(payload, allowed)


# === control messages ===


def encode_hello(service_uuid: uuid.UUID | None = None, name: str = "") -> list[bytes]:
    """A worker's hello to an ingester (service uuid and name) or to a replay pool (bare)."""
    return [HELLO] if service_uuid is None else [HELLO, service_uuid.bytes, name.encode()]


def decode_hello(frames: Sequence[Any]) -> tuple[uuid.UUID, str] | None:
    """The service uuid and name of a worker's hello to an ingester; ``None`` if it is not
    one (the name must be UTF-8 text of 1 to 255 bytes)."""
    if len(frames) != 3 or _bytes(frames[0]) != HELLO:
        return None
    raw_uuid, raw_name = _bytes(frames[1]), _bytes(frames[2])
    if len(raw_uuid) != 16 or not 0 < len(raw_name) < 256:
        return None
    try:
        return uuid.UUID(bytes=raw_uuid), raw_name.decode("utf8")
    except UnicodeDecodeError:
        return None


def encode_parameters(blob: bytes) -> list[bytes]:
    return [PARAMETERS, blob]


def encode_credit(events_done: int) -> list[bytes]:
    return [CREDIT, events_done.to_bytes(8, "little")]


def decode_credit(frames: Sequence[Any]) -> int:
    return int.from_bytes(_bytes(frames[1]), "little")


def encode_done(counters: dict[str, int]) -> list[bytes]:
    return [DONE, msgspec.msgpack.encode(counters)]


def decode_done(frames: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = msgspec.msgpack.decode(_bytes(frames[1]), type=dict[str, int])
    return out


def kind(frames: Sequence[Any]) -> bytes:
    """The first byte string of a message: which of the layouts above it is."""
    return _bytes(frames[0])


def _bytes(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)
