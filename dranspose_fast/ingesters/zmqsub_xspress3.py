"""Xspress3 over a ZeroMQ SUB socket: the detector Tango device's PUB port.

A series is a ``header`` message, one image per frame and a ``series_end`` message.  An image
comes either as one three-part message ``[header, spectra, meta]`` or, from older devices, as
three single-part messages in a row (the image header JSON, the raw spectra, the pickled
metadata list); ``XspressFramer`` joins the latter into one three-frame message, so workers
and dumps always see the three-frame form, as with dranspose 0.2.

The framer decodes only the JSON header (never the spectra, never the pickle) and checks the
spectra frame's size against ``shape`` and ``type``.  A message that breaks the rules (not
JSON, an unknown ``htype``, a wrong number of frames, spectra of the wrong size, an image
whose data or metadata message never came) is dropped and counted as malformed; the series
phases (nothing before the header, nothing after the end) come from ``FramedIngester``.

A subclass that overrides ``run_source`` (0.2 style) can wrap ``super().run_source(stream)``,
which yields the same event messages from an asyncio socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal, NoReturn

from dranspose_fast.data.xspress3 import XspressDecodeError
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
)
from dranspose_fast.middlewares.xspress import data_nbytes, decode_header

__all__ = ["XspressFramer", "ZmqSubXspressIngester", "ZmqSubXspressSettings"]

_TYP: Final = "xspress"
_NOTHING: Final[tuple[Framed, ...]] = ()


class XspressFramer(Framer):
    """Xspress3 rules: single-part start/end, images in one message or three in a row."""

    typ: ClassVar[str] = _TYP

    def __init__(self) -> None:
        # Frames of a legacy image collected so far (its header, then its data), or None.
        self._pending: list[Any] | None = None
        self._nbytes = 0
        self._frame_number: object = None

    def reset(self) -> None:
        self._pending = None

    def feed(self, frames: list[Any]) -> Sequence[Framed]:
        if not frames:
            raise FrameError("frames", "a message without frames")
        pending = self._pending
        if pending is None:
            return self._message(frames)
        if len(pending) == 1:
            if len(frames) == 1 and len(frames[0]) == self._nbytes:
                pending.append(frames[0])
                return _NOTHING
            self._interrupted(frames, "data", f"{self._nbytes}-byte spectra message")
        if len(frames) == 1 and not _looks_like_json(frames[0]):
            self._pending = None
            pending.append(frames[0])
            return ((DATA, pending),)
        self._interrupted(frames, "meta", "pickled metadata message")

    def _message(self, frames: list[Any]) -> Sequence[Framed]:
        """A message that starts something: a start, an end or an image (whole or legacy)."""
        n = len(frames)
        try:
            header = decode_header(frames[0])
            nbytes = data_nbytes(header)
        except XspressDecodeError as exc:
            raise FrameError(exc.field or "header", str(exc)) from None
        htype = header["htype"]
        if htype == "image":
            if n == 3:
                if len(frames[1]) != nbytes:
                    raise FrameError("data", f"image frame={header.get('frame')!r}: data "
                                     f"(frame 1) holds {len(frames[1])} bytes, its shape and "
                                     f"type need {nbytes}")
                return ((DATA, frames),)
            if n == 1:
                self._pending = [frames[0]]
                self._nbytes = nbytes
                self._frame_number = header.get("frame")
                return _NOTHING
            raise FrameError("frames", f"image frame={header.get('frame')!r} has {n} frames, "
                             "expected 3 (header, data, meta) or 1 followed by data and meta "
                             "messages")
        if n != 1:
            raise FrameError("frames", f"{htype!r} message has {n} frames, expected 1")
        return ((START if htype == "header" else END, frames),)

    def _interrupted(self, frames: list[Any], field: str, wanted: str) -> NoReturn:
        """A legacy image lost a part: drop it, and this message unless it starts a new image.

        Raises
        ------
        FrameError
            always (the broken image is counted as one malformed message).
        """
        self._pending = None
        lost = f"image frame={self._frame_number!r} expected its {wanted}"
        if len(frames) == 1 and _looks_like_json(frames[0]):
            try:
                out = self._message(frames)
            except FrameError:
                out = _NOTHING
            if self._pending is not None:
                raise FrameError(field, f"{lost}, got the header of the next image; "
                                 "the incomplete image is dropped")
            got = ("an unreadable JSON message" if not out
                   else "a 'header' message" if out[0][0] == START else "a 'series_end' message")
        else:
            got = f"a message of {len(frames)} frame(s) and {len(frames[0])} bytes"
        raise FrameError(field, f"{lost}, got {got}; both are dropped")


def _looks_like_json(frame: Any) -> bool:
    """A JSON object (pickles never start with ``{``)."""
    return len(frame) > 0 and bytes(memoryview(frame)[:1]) == b"{"


class ZmqSubXspressSettings(FramedSettings):
    """``UPSTREAM_URL`` (or ``UPSTREAM_URLS`` per stream): the Xspress3 device's PUB port."""


class ZmqSubXspressIngester(FramedIngester):
    """Forwards Xspress3 series from SUB upstreams to the workers (``typ="xspress"``)."""

    framer_class: ClassVar[type[Framer]] = XspressFramer
    socket_type: ClassVar[Literal["PULL", "SUB"]] = "SUB"
    settings_class: ClassVar[type[UpstreamSettings]] = ZmqSubXspressSettings
    settings_attribute: ClassVar[str | None] = "_streaming_xspress_settings"
