"""PandA PCAP over a ZeroMQ SUB socket: one event message per captured row.

The PandA device publishes blocks: a ``data`` message holds every captured field as a list of
the same length and ``frame_number`` numbers its first row.  As dranspose 0.2 does, each block
is split into one message per row (``frame_number + i``, list fields replaced by their i-th
item, scalar fields kept), so an event is one trigger.  Series start and end messages are
forwarded as received.  A data message in several frames, or whose lists differ in length or
that has none, is dropped and counted as malformed (``FrameError``).

The split decodes with ``msgspec`` and encodes each row with it, in 0.2's field order; rows
parse (``middlewares.pcap.parse``) to the same ``PCAPData`` as 0.2's.  Messages whose
declared fields are not exactly typed go through pydantic first, as 0.2 validated them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any, ClassVar, Final

import msgspec

from dranspose_fast.data.pcap import PCAPDecodeError
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
from dranspose_fast.middlewares.pcap import decode_object, validated

__all__ = ["PCAPFramer", "ZmqSubPCAPIngester", "ZmqSubPCAPSettings", "split_rows"]

_encode = msgspec.json.encode
_DECLARED: Final = ("message_id", "version", "message_type", "frame_number")


class ZmqSubPCAPSettings(FramedSettings):
    """``UPSTREAM_URL``: the PandA device's PUB socket (or ``UPSTREAM_URLS`` per stream)."""


def split_rows(msg: dict[str, Any]) -> list[bytes]:
    """The JSON of each row of a decoded ``data`` block, in dranspose 0.2's field order.

    Parameters
    ----------
    msg : dict
        A decoded data message whose declared fields are exactly typed (``int`` ids, version 1).

    Returns
    -------
    list of bytes
        One JSON object per row: ``frame_number + i``, lists replaced by their i-th item.

    Raises
    ------
    FrameError
        if no field is a list, the lists differ in length, or a value cannot be encoded.
    """
    extras = [(k, v) for k, v in msg.items() if k not in _DECLARED]
    lengths = {k: len(v) for k, v in extras if type(v) is list}
    if not lengths:
        raise FrameError("data", "no field is a list of captured values")
    n = next(iter(lengths.values()))
    if any(m != n for m in lengths.values()):
        raise FrameError("data", f"captured lists differ in length: {_lengths(lengths)}")
    keys = [k for k, _ in extras]
    columns = [v if type(v) is list else repeat(v, n) for _, v in extras]
    message_id = msg["message_id"]
    version = msg["version"]
    kind = msg["message_type"]
    first = msg["frame_number"]
    out: list[bytes] = []
    try:
        for i, values in enumerate(zip(*columns, strict=True)):
            row = {"message_id": message_id, "version": version, "message_type": kind,
                   "frame_number": first + i}
            row.update(zip(keys, values, strict=True))
            out.append(_encode(row))
    except (msgspec.EncodeError, UnicodeEncodeError, TypeError, ValueError) as exc:
        raise FrameError("data", f"a captured value cannot be written as JSON: {exc}") from None
    if len(out) != n:  # zip(*[]) cannot happen (lengths is not empty); belt and braces
        raise FrameError("data", f"expected {n} rows, built {len(out)}")
    return out


def _lengths(lengths: dict[str, int], limit: int = 6) -> str:
    items = [f"{k!r}: {n}" for k, n in list(lengths.items())[:limit]]
    return ", ".join(items) + (", ..." if len(lengths) > limit else "")


class PCAPFramer(Framer):
    """Start and end as received; each data block split into one message per row."""

    typ: ClassVar[str] = "PCAP"

    def feed(self, frames: list[Any]) -> Sequence[Framed]:
        if not frames:
            raise FrameError("frames", "an empty message")
        try:
            msg = decode_object(frames[0])
            kind = msg.get("message_type")
            if kind == "data":
                if len(frames) != 1:
                    raise FrameError("frames", f"a data message in {len(frames)} frames: "
                                     "PCAP multipart data messages are not supported")
                if not _exact(msg):
                    msg = _declared_first(validated(msg))
                return [(DATA, [row]) for row in split_rows(msg)]
            packet = validated(msg)  # start and end: rare, validated as 0.2 did
        except PCAPDecodeError as exc:
            raise FrameError("frame 0", str(exc)) from None
        return ((START if packet.message_type == "series-start" else END, frames),)


def _exact(msg: dict[str, Any]) -> bool:
    version = msg.get("version")
    return (type(msg.get("message_id")) is int and type(version) is int and version == 1
            and type(msg.get("frame_number")) is int)


def _declared_first(packet: Any) -> dict[str, Any]:
    """A validated data packet as a dict: the coerced declared fields, then the extras."""
    out = {k: getattr(packet, k) for k in _DECLARED}
    out.update(packet.model_extra or {})
    return out


class ZmqSubPCAPIngester(FramedIngester):
    """Forwards PandA PCAP series from SUB upstreams, one event per captured row."""

    framer_class: ClassVar[type[Framer]] = PCAPFramer
    socket_type = "SUB"
    settings_class: ClassVar[type[UpstreamSettings]] = ZmqSubPCAPSettings
    settings_attribute: ClassVar[str | None] = "_streaming_PCAP_settings"
