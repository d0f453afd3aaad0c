"""ALBA electrometer (AlbaEM) stream over a ZeroMQ SUB socket.

Events form as in dranspose 0.2: ``series-start`` starts the series, each ``data`` message is
one event, ``series-end`` ends it; a message is forwarded as received (``typ="albaem"``).  A
message is read as 0.2's ``AlbaemPacket`` reads it: a JSON object in frame 0 with
``message_id`` (int), ``version`` 1, a known ``message_type``, and for ``data`` also
``frame_number``, ``timestamp`` and ``acquisition_timestamp``; exactly typed fields are
checked directly (msgspec), anything else goes through 0.2's pydantic rules.  A message that
fails them is dropped and counted as malformed (0.2 logged and skipped it).  Frames after
the first are forwarded untouched, as 0.2 did (the device sends one frame per message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal

from dranspose_fast.data.albaem import AlbaemBase, AlbaemData, AlbaemEnd, AlbaemStart
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

__all__ = ["AlbaemFramer", "ZmqSubAlbaemIngester", "ZmqSubAlbaemSettings"]

_TYP: Final = "albaem"
_KINDS: Final = {"data": DATA, "series-start": START, "series-end": END}
_MODELS: Final[dict[str, type[AlbaemBase]]] = {
    "data": AlbaemData, "series-start": AlbaemStart, "series-end": AlbaemEnd,
}


class AlbaemFramer(Framer):
    """One message is one event message; its kind comes from ``message_type``."""

    typ: ClassVar[str] = _TYP

    def feed(self, frames: list[Any]) -> Sequence[Framed]:
        if not frames:
            raise FrameError("frames", "an empty message")
        msg = json_head(frames[0], "frame 0")
        mtype = msg.get("message_type")
        kind = _KINDS.get(mtype) if type(mtype) is str else None
        if kind is None or type(mtype) is not str:
            raise FrameError("frame 0 field 'message_type'",
                             f"{mtype!r}, expected 'series-start', 'data' or 'series-end'")
        get = msg.get
        version = get("version")
        if not (type(get("message_id")) is int and type(version) is int and version == 1
                and (kind != DATA or (type(get("frame_number")) is int
                                      and type(get("timestamp")) in (float, int)
                                      and type(get("acquisition_timestamp")) is int))):
            check_model(_MODELS[mtype], frames[0], "frame 0")
        return ((kind, frames),)


class ZmqSubAlbaemSettings(FramedSettings):
    """``UPSTREAM_URL`` (or ``UPSTREAM_URLS`` per stream): the electrometer's PUB port."""


class ZmqSubAlbaemIngester(FramedIngester):
    """Forwards AlbaEM series (start, readings, end) from SUB upstreams to the workers."""

    framer_class: ClassVar[type[Framer]] = AlbaemFramer
    socket_type: ClassVar[Literal["PULL", "SUB"]] = "SUB"
    settings_class: ClassVar[type[UpstreamSettings]] = ZmqSubAlbaemSettings
    settings_attribute: ClassVar[str | None] = "_streaming_albaem_settings"
