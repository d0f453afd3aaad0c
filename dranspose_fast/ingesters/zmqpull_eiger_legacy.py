"""DECTRIS Eiger legacy stream ("Stream V1") over a ZeroMQ PULL socket.

Events form as in dranspose 0.2: the header message (``dheader-1.0``) starts the series,
each image message (``dimage-1.0``) is one event, the end message (``dseries_end-1.0``) ends
it; every message is forwarded with all of its parts as received (``typ="EIGER_LEGACY"``).

The framer decodes part 1 only (the small JSON header, msgspec), never an image.  Unlike 0.2,
which forwarded any message whose part 1 validated, a header or image whose part count does
not fit its kind (see ``middlewares.eiger_legacy``: 9/8 parts for ``header_detail="all"``,
3/2 for ``"basic"``, 2/1 for ``"none"``, 5/4 for an image) is dropped and counted as
malformed here: 0.2's ``parse`` would have failed on it in the worker.  A second header
inside a running series is dropped and counted too (0.2 ignored it silently).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal

from dranspose_fast.data.eiger_legacy import EigerLegacyImage
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
    check_model,
    json_head,
)
from dranspose_fast.middlewares.eiger_legacy import IMAGE_PARTS, header_parts

__all__ = [
    "EigerLegacyFramer", "ZmqPullEigerLegacyIngester", "ZmqPullEigerLegacySettings",
]

_TYP: Final = "EIGER_LEGACY"


class EigerLegacyFramer(Framer):
    """One message is one event message; its kind comes from ``htype`` in part 1."""

    typ: ClassVar[str] = _TYP

    def message_index(self, frames: list[Any]) -> int | None:
        """``frame`` + 1 for an image (frames count from 0, after the header)."""
        try:
            head = json_head(frames[0], "part 1")
        except FrameError:
            return None
        frame = head.get("frame")
        return frame + 1 if head.get("htype") == "dimage-1.0" and type(frame) is int \
            and frame >= 0 else None

    def feed(self, frames: list[Any]) -> Sequence[Framed]:
        if not frames:
            raise FrameError("parts", "an empty message")
        head = json_head(frames[0], "part 1 (message header)")
        htype = head.get("htype")
        n = len(frames)
        if htype == "dimage-1.0":
            if type(head.get("frame")) is not int:
                check_model(EigerLegacyImage, frames[0], "part 1")
            if n not in IMAGE_PARTS:
                raise FrameError("parts", f"an image has {n} parts, expected 5 (or 4)")
            return ((DATA, frames),)
        if htype == "dheader-1.0":
            bare, full = header_parts(head)
            if n != full and n != bare:
                raise FrameError("parts", f"a header with header_detail="
                                 f"{head.get('header_detail')!r} has {n} parts, expected {full}")
            return ((START, frames),)
        if htype == "dseries_end-1.0":
            return ((END, frames),)
        raise FrameError("part 1 field 'htype'", f"{htype!r} is no Eiger legacy message type")


class ZmqPullEigerLegacySettings(FramedSettings):
    """``UPSTREAM_URL`` (or ``UPSTREAM_URLS`` per stream): the detector's or the
    streaming-receiver's PUSH port."""


class ZmqPullEigerLegacyIngester(FramedIngester):
    """Forwards Eiger legacy series (header, images, end) from PULL upstreams to the workers."""

    framer_class: ClassVar[type[Framer]] = EigerLegacyFramer
    socket_type: ClassVar[Literal["PULL", "SUB"]] = "PULL"
    settings_class: ClassVar[type[UpstreamSettings]] = ZmqPullEigerLegacySettings
    settings_attribute: ClassVar[str | None] = "_streaming_eiger_legacy_settings"
