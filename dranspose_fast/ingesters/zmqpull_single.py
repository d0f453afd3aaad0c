"""STINS (MAX IV stream1) over a ZeroMQ PULL socket: the streaming-receiver's repub port.

The data loop reads the upstream itself (``StinsSource``): it decodes only the ``htype`` of
frame 0 (msgspec), never an image.  A series is ``header``, ``image``..., ``series_end``:
messages before the header and after the end are discarded and counted, messages whose
frame 0 is not JSON with a text ``htype`` (or an unknown one) are counted as malformed.

A subclass that overrides ``run_source`` (0.2 style, e.g. to add a software-triggered stream)
gets the generator path for every stream; ``super().run_source(stream)`` then yields the
same three-phase series from an asyncio socket.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar, Final

import msgspec
import zmq

from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.ingester import Ingester, IsSoftwareTriggered, UpstreamSettings
from dranspose_fast.ingester.sources import DATA, END, MALFORMED, START, UpstreamSource
from dranspose_fast.protocol import StreamName

__all__ = ["StinsSource", "ZmqPullSingleIngester", "ZmqPullSingleSettings", "classify_stins"]

_TYP: Final = "STINS"


class _Htype(msgspec.Struct):
    htype: str


class _Frame(msgspec.Struct):
    htype: str
    frame: int | None = None


_htype_decoder = msgspec.json.Decoder(_Htype)
_frame_decoder = msgspec.json.Decoder(_Frame)
_KINDS: Final = {"image": DATA, "header": START, "series_end": END}


def classify_stins(frames: list[zmq.Frame]) -> int:
    """DATA, START, END or MALFORMED from the ``htype`` of frame 0 (other fields unread)."""
    try:
        # memoryview(frame) costs a quarter of frame.buffer (pyzmq 27)
        htype = _htype_decoder.decode(memoryview(frames[0])).htype  # type: ignore[arg-type]
    except msgspec.DecodeError:
        return MALFORMED
    return _KINDS.get(htype, MALFORMED)


class ZmqPullSingleSettings(UpstreamSettings):
    """``UPSTREAM_URL`` (or ``UPSTREAM_URLS`` per stream) plus the ingester settings."""


class StinsSource(UpstreamSource):
    """A STINS upstream: series-phased, classified by ``htype``."""

    typ = _TYP
    series = True

    def classify(self, frames: list[zmq.Frame]) -> int:
        return classify_stins(frames)

    def message_index(self, frames: list[zmq.Frame]) -> int | None:
        """``frame`` + 1 for an image (frames count from 0, after the header)."""
        try:
            head = _frame_decoder.decode(memoryview(frames[0]))  # type: ignore[arg-type]
        except msgspec.DecodeError:
            return None
        if head.htype != "image" or head.frame is None or head.frame < 0:
            return None
        return head.frame + 1


class ZmqPullSingleIngester(Ingester):
    """Forwards STINS series from PULL upstreams (one per stream) to the workers."""

    settings_class: ClassVar[type[UpstreamSettings]] = ZmqPullSingleSettings

    def __init__(self, settings: UpstreamSettings | None = None) -> None:
        settings = settings if settings is not None else ZmqPullSingleSettings()
        self._streaming_single_settings = settings
        super().__init__(settings)
        self._in_sockets: dict[StreamName, zmq.Socket[Any]] = {}

    def direct_source(self, stream: StreamName) -> UpstreamSource | None:
        if type(self).run_source is not ZmqPullSingleIngester.run_source:
            return None  # a subclass brought its own generator: honour it
        cfg = self._streaming_single_settings
        return StinsSource(self.zmq_context, stream, cfg.url_of(stream), self.counters,
                           self.log, rcvhwm=cfg.hwm)

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        """The same series as the fast path, from an asyncio socket (for subclasses)."""
        sock = self.ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self._streaming_single_settings.hwm)
        sock.connect(self._streaming_single_settings.url_of(stream))
        self._in_sockets[stream] = sock
        counters = self._source_counters
        started = False
        while True:
            frames = await sock.recv_multipart(copy=False)
            kind = classify_stins(frames)
            if kind == MALFORMED:
                counters.malformed += 1
                self.log.warning("stream %s: dropped a malformed STINS message", stream)
            elif not started and kind == START:
                started = True
                yield make_stream_data(_TYP, frames)
            elif started and kind == DATA:
                yield make_stream_data(_TYP, frames)
            elif started and kind == END:
                yield make_stream_data(_TYP, frames)
                break
            else:
                counters.discarded_outside_scan += 1
        while True:
            await sock.recv_multipart(copy=False)
            counters.discarded_outside_scan += 1

    async def stop_source(self, stream: StreamName) -> None:
        sock = self._in_sockets.pop(stream, None)
        if sock is not None:
            sock.close(linger=0)
