"""DECTRIS Stream V2 over a ZeroMQ PULL socket (the detector PUSHes from port 31001).

Events form as for every series protocol here: the start message (``type: "start"``) starts
the series, each image message is one event, the end message ends it; the trigger map sends
the start and the end to every worker (``all_wrap``) and the images where it says.  Messages
are forwarded as received, one frame each (``typ="STREAM2"``); workers decode them with
``dranspose_fast.middlewares.stream2.parse``.

The framer never decodes an image: the compiled ``scan`` walks the message's CBOR structure
(skipping the pixel bytes, about a microsecond per message whatever its size) and checks
what the worker's decode would refuse (tags, array shapes against byte counts, compression
algorithms), so a malformed message is dropped and counted here, with its field named, not
handed to a worker.  An image whose ``series_id`` is not the running series' is malformed
too.  A message of a ``type`` other than start, image and end (a newer firmware's) is dropped
and counted as ``dropped_unknown_type``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal

from dranspose_fast._stream2 import Stream2DecodeError, scan
from dranspose_fast.ingester import UpstreamSettings
from dranspose_fast.ingester.framing import (
    DATA,
    END,
    START,
    Framed,
    FramedIngester,
    FramedSettings,
    FrameError,
    Framer,
    UnknownMessageType,
)
from dranspose_fast.middlewares.stream2 import TYP

__all__ = ["Stream2Framer", "ZmqPullStream2Ingester", "ZmqPullStream2Settings"]

_KINDS: Final = {"start": START, "image": DATA, "end": END}


class Stream2Framer(Framer):
    """One message is one event message; its kind is the message's ``type``."""

    typ: ClassVar[str] = TYP

    def __init__(self) -> None:
        self.series_id = -1

    def reset(self) -> None:
        self.series_id = -1

    def message_index(self, frames: list[Any]) -> int | None:
        """``image_id`` + 1 for an image (the spec numbers images from 0, after the start)."""
        try:
            kind, _series, image_id = scan(frames[0])
        except Stream2DecodeError:
            return None
        return image_id + 1 if kind == "image" and image_id >= 0 else None

    def feed(self, frames: list[Any]) -> Sequence[Framed]:
        if len(frames) != 1:
            raise FrameError("parts", f"a message has {len(frames)} parts, expected 1")
        try:
            kind, series_id, image_id = scan(frames[0])
        except Stream2DecodeError as exc:
            where = f" (byte {exc.offset})" if exc.offset >= 0 else ""
            raise FrameError(exc.field or "message", exc.problem + where) from None
        framed = _KINDS.get(kind) if kind is not None else None
        if framed is None:
            if kind is None:
                raise FrameError("type", "missing, or not a text string")
            raise UnknownMessageType("type", f"{kind!r} is no Stream V2 message type")
        if series_id < 0:
            raise FrameError("series_id", "missing, or not an unsigned integer")
        if framed == DATA:
            if image_id < 0:
                raise FrameError("image_id", "missing, or not an unsigned integer")
            if self.series_id >= 0 and series_id != self.series_id:
                raise FrameError("series_id", f"{series_id}, but the running series is "
                                 f"{self.series_id}")
        elif framed == START and self.series_id < 0:
            self.series_id = series_id  # a second start is the series rules' to drop
        return ((framed, frames),)


class ZmqPullStream2Settings(FramedSettings):
    """``UPSTREAM_URL`` (or ``UPSTREAM_URLS`` per stream): the detector's Stream V2 port,
    ``tcp://<detector control unit>:31001``."""


class ZmqPullStream2Ingester(FramedIngester):
    """Forwards Stream V2 series (start, images, end) from PULL upstreams to the workers."""

    framer_class: ClassVar[type[Framer]] = Stream2Framer
    socket_type: ClassVar[Literal["PULL", "SUB"]] = "PULL"
    settings_class: ClassVar[type[UpstreamSettings]] = ZmqPullStream2Settings
