"""Framing of the data plane: packed event batches to workers, packed results to the reducer.

Message layouts (internal; they need not match dranspose 0.2's, DESIGN.md §3):

* events  ``[b"E", meta, index, payload, big_0, ...]``: ``meta`` is msgpack
  ``[[stream, typ], ...]``; index and payload come from ``_batch.pack``. Frames of
  ``ZERO_COPY_THRESHOLD`` bytes or more travel as their own frames, sent zero-copy.
* results ``[b"R", meta, index, payload]``: ``meta`` is msgpack ``[worker, parameters_hash]``;
  each payload is the pickled return value of ``process_event``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import zmq

from dranspose_fast import _batch
from dranspose_fast.event import StreamData

#: Frames at least this large are sent as their own zero-copy ZMQ frames; smaller ones are
#: packed (pyzmq copies frames below this size anyway, reference/limits.md).
ZERO_COPY_THRESHOLD = zmq.COPY_THRESHOLD

EVENTS = b"E"
RESULTS = b"R"

_meta_encoder = msgspec.msgpack.Encoder()
_streams_decoder = msgspec.msgpack.Decoder(list[tuple[str, str]])
_result_meta_decoder = msgspec.msgpack.Decoder(tuple[str, str | None])

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
        return _meta_encoder.encode(list(self.ids))


def encode_events(events: Sequence[PartialEvent]) -> list[Any]:
    """Multipart frames for a batch of (event_number, {stream: StreamData}) to one worker."""
    table = StreamTable()
    entries = [
        (evn, table.id(name, data.typ), [_as_buffer(f) for f in data.frames])
        for evn, streams in events
        for name, data in streams.items()
    ]
    index, payload, externals = _batch.pack(entries, ZERO_COPY_THRESHOLD)
    return [EVENTS, table.meta(), index, payload, *externals]


def _as_buffer(frame: Any) -> Any:
    return frame.buffer if isinstance(frame, zmq.Frame) else frame


def decode_events(frames: Sequence[Any]) -> list[PartialEvent]:
    """Inverse of ``encode_events`` (frames may be ``bytes`` or ``zmq.Frame``)."""
    if len(frames) < 4 or _bytes(frames[0]) != EVENTS:
        raise _batch.BatchFormatError(f"not an event batch: {len(frames)} frames")
    streams = _streams_decoder.decode(_bytes(frames[1]))
    externals = list(frames[4:])
    index = frames[2].buffer if isinstance(frames[2], zmq.Frame) else frames[2]
    payload = frames[3].buffer if isinstance(frames[3], zmq.Frame) else frames[3]
    out: list[PartialEvent] = _batch.unpack(index, payload, externals, streams)
    return out


def encode_results(
    worker: str, parameters_hash: str | None, results: Sequence[tuple[int, bytes]]
) -> list[bytes]:
    index, payload = _batch.pack_results(list(results))
    return [RESULTS, _meta_encoder.encode((worker, parameters_hash)), index, payload]


def decode_results(frames: Sequence[Any]) -> tuple[str, str | None, list[tuple[int, Any]]]:
    if len(frames) != 4 or _bytes(frames[0]) != RESULTS:
        raise _batch.BatchFormatError(f"not a result batch: {len(frames)} frames")
    worker, phash = _result_meta_decoder.decode(_bytes(frames[1]))
    return worker, phash, _batch.unpack_results(frames[2], frames[3])


def _bytes(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)
