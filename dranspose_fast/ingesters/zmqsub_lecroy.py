"""Ingester of the LeCroy MAUI oscilloscope streamer, subscribed over ZeroMQ.

One trigger sequence spreads over several upstream messages: a sequence start (``what=1``,
naming the channels), one three-frame "traces" message per channel, a sequence end
(``what=2``).  Events form by dranspose 0.2's rules:

* start event: a ``LecroyPrepare`` (``what=0``) followed by a sequence start; the event holds
  the prepare message alone.
* one event per sequence: the sequence start, every traces message, the sequence end, in one
  event message (``1 + 3 * nchannels + 1`` frames, as ``middlewares.lecroy.parse`` reads it).
  In continuous mode (``ntriggers == -1``) the streamer sends the sequence start only once;
  it is kept and put in front of every sequence, so both modes give the same message shape.
* end event: the ``LecroyEnd`` (``what=3``) alone; frames of an unfinished sequence are logged.

Unlike 0.2, every traces message is checked here (JSON, three frames, waveform size against
its shape and dtype, timestamps unpickled as plain data only), and a sequence that misses a
channel's traces is dropped and counted instead of reaching workers that cannot parse it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from dranspose_fast.data.lecroy import (
    LECROY_TYPE,
    LecroyData,
    LecroyEnd,
    LecroyPrepare,
    LecroySeqEnd,
    LecroySeqStart,
)
from dranspose_fast.errors import DecodeError
from dranspose_fast.ingester import UpstreamSettings
from dranspose_fast.ingester.framing import (
    DATA,
    END,
    START,
    FramedIngester,
    FramedSettings,
    FrameError,
    Framer,
)
from dranspose_fast.middlewares.lecroy import decode_header, parse_trace

__all__ = ["LecroyFramer", "ZmqSubLecroyIngester", "ZmqSubLecroySettings"]

logger = logging.getLogger(__name__)

_NOTHING: tuple[()] = ()


class ZmqSubLecroySettings(FramedSettings):
    """Where the LeCroy streamer publishes (``UPSTREAM_URL``, or ``UPSTREAM_URLS``)."""


class LecroyFramer(Framer):
    """Prepare + sequence start -> start event; one event per sequence; end -> end event."""

    typ: ClassVar[str] = LECROY_TYPE

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prepare: list[Any] | None = None  # a prepare waiting for its sequence start
        self._running = False
        self._continuous = False
        self._start: list[Any] = []  # the sequence start kept in continuous mode
        self._buffer: list[Any] = []  # frames of the sequence being gathered
        self._channels = 0
        self._traces = 0

    def feed(self, frames: list[Any]) -> Sequence[tuple[int, list[Any]]]:
        if not frames:
            raise FrameError("frame 0", "empty message")
        try:
            packet = decode_header(frames[0], 0)
        except DecodeError as exc:
            raise FrameError("header", str(exc)) from None
        if isinstance(packet, LecroyData):
            return self._trace(frames, packet)
        if len(frames) != 1:
            raise FrameError("frames", f"a {type(packet).__name__} message has {len(frames)} "
                                       "frames, expected 1")
        if not self._running:
            return self._before_start(frames, packet)
        if isinstance(packet, LecroySeqStart):
            return self._sequence_start(frames, packet)
        if isinstance(packet, LecroySeqEnd):
            return self._sequence_end(frames)
        if isinstance(packet, LecroyEnd):
            left = len(self._buffer) - (len(self._start) if self._continuous else 0)
            if left:
                logger.error("LeCroy end (frame %d) with %d frames of an unfinished sequence "
                             "left in the buffer: dropped", packet.frame, left)
            self.reset()
            return ((END, frames),)
        raise FrameError("what", f"{type(packet).__name__} inside a running acquisition "
                                 "(its end message did not come)")

    def _before_start(self, frames: list[Any], packet: Any) -> Sequence[tuple[int, list[Any]]]:
        """Waiting for a prepare and the sequence start that follows it."""
        if isinstance(packet, LecroyPrepare):
            self._prepare = frames
            return _NOTHING
        prepare, self._prepare = self._prepare, None
        if prepare is not None and isinstance(packet, LecroySeqStart):
            self._running = True
            self._continuous = packet.ntriggers == -1
            self._begin_sequence(frames, packet)
            return ((START, prepare),)
        return ((DATA, frames),)  # outside an acquisition: dropped by the series rules

    def _begin_sequence(self, frames: list[Any], packet: LecroySeqStart) -> None:
        if self._continuous:
            self._start = frames
        self._buffer = list(frames)
        self._channels = len(packet.channels)
        self._traces = 0

    def _sequence_start(self, frames: list[Any],
                        packet: LecroySeqStart) -> Sequence[tuple[int, list[Any]]]:
        lost = self._traces
        self._begin_sequence(frames, packet)
        if lost:
            raise FrameError("what", f"sequence start (seqno {packet.seqno}) inside an unfinished "
                                     f"sequence: its {lost} traces messages were dropped")
        return _NOTHING

    def _trace(self, frames: list[Any], meta: LecroyData) -> Sequence[tuple[int, list[Any]]]:
        if len(frames) != 3:
            raise FrameError("frames", f"traces message (frame {meta.frame}, ch {meta.ch}) has "
                                       f"{len(frames)} frames, expected 3: metadata, waveforms, "
                                       "timestamps")
        if not self._running:
            return ((DATA, frames),)  # outside an acquisition: dropped by the series rules
        try:
            parse_trace(frames, 0, meta)
        except DecodeError as exc:
            raise FrameError("traces", str(exc)) from None
        if not self._buffer:
            raise FrameError("htype", f"traces (frame {meta.frame}, ch {meta.ch}) before their "
                                      "sequence start")
        if self._traces >= self._channels:
            raise FrameError("ch", f"traces (frame {meta.frame}, ch {meta.ch}) beyond the "
                                   f"{self._channels} channels of the sequence")
        self._buffer += frames
        self._traces += 1
        return _NOTHING

    def _sequence_end(self, frames: list[Any]) -> Sequence[tuple[int, list[Any]]]:
        if not self._buffer:
            raise FrameError("what", "sequence end without a sequence start")
        out = self._buffer
        got = self._traces
        self._buffer = list(self._start) if self._continuous else []
        self._traces = 0
        if got != self._channels:
            raise FrameError("traces", f"sequence ended with {got} traces messages for "
                                       f"{self._channels} channels: dropped")
        out += frames
        return ((DATA, out),)


class ZmqSubLecroyIngester(FramedIngester):
    """Subscribes to the LeCroy streamer; one event per trigger sequence (module docstring)."""

    framer_class: ClassVar[type[Framer]] = LecroyFramer
    socket_type: ClassVar[Literal["PULL", "SUB"]] = "SUB"
    settings_class: ClassVar[type[UpstreamSettings]] = ZmqSubLecroySettings
    settings_attribute: ClassVar[str | None] = "_streaming_Lecroy_settings"
