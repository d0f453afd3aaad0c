"""Ingester of contrast (the NanoMAX scan software) scan progress, subscribed over ZeroMQ.

Events form by dranspose 0.2's rules: the ``started`` message is the scan's start event, each
``running`` message (one per scan point) one event, ``finished`` the end event; heartbeats
form no event.  Each event carries the received frames untouched (typ ``"contrast"``).

The pickled payloads are read with ``dranspose_fast.helpers.safe_pickle`` (plain data only);
dranspose 0.2 called ``pickle.loads`` on whatever reached its port, which runs the code a
pickle names.  A message that cannot be read (or names a class that is not plain data) is
dropped and counted as malformed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from dranspose_fast.data.contrast import (
    CONTRAST_TYPE,
    ContrastFinished,
    ContrastHeartbeat,
    ContrastRunning,
    ContrastStarted,
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
from dranspose_fast.middlewares.contrast import decode_payload

__all__ = ["ContrastFramer", "ZmqSubContrastIngester", "ZmqSubContrastSettings"]

_NOTHING: tuple[()] = ()


class ZmqSubContrastSettings(FramedSettings):
    """Where contrast publishes (``UPSTREAM_URL``, or ``UPSTREAM_URLS`` per stream)."""


class ContrastFramer(Framer):
    """started -> start event, running -> one event each, finished -> end, heartbeat -> none."""

    typ: ClassVar[str] = CONTRAST_TYPE

    def feed(self, frames: list[Any]) -> Sequence[tuple[int, list[Any]]]:
        if not frames:
            raise FrameError("frame 0", "empty message")
        try:
            packet = decode_payload(frames[0])
        except DecodeError as exc:
            raise FrameError("payload", str(exc)) from None
        cls = type(packet)
        if cls is ContrastRunning:
            return ((DATA, frames),)
        if cls is ContrastHeartbeat:
            return _NOTHING
        if cls is ContrastStarted:
            return ((START, frames),)
        if cls is ContrastFinished:
            return ((END, frames),)
        raise FrameError("status", f"unexpected packet {cls.__name__}")  # pragma: no cover


class ZmqSubContrastIngester(FramedIngester):
    """Subscribes to contrast; one event per scan point (see the module docstring)."""

    framer_class: ClassVar[type[Framer]] = ContrastFramer
    socket_type: ClassVar[Literal["PULL", "SUB"]] = "SUB"
    settings_class: ClassVar[type[UpstreamSettings]] = ZmqSubContrastSettings
    settings_attribute: ClassVar[str | None] = "_streaming_contrast_settings"
