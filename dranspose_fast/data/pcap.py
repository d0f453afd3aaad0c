"""Messages of the PandA PCAP stream over ZeroMQ (the PandA Tango device's PUB socket).

A series is one ``PCAPStart`` (``message_type="series-start"``, with the ``arm_time``), data
messages and one ``PCAPEnd`` (``"series-end"``).  Upstream, a data message carries a block of
rows: every captured field is a list, ``frame_number`` the number of the first row.  The
ingester (``dranspose_fast.ingesters.zmqsub_pcap``) splits each block into one message per row,
as dranspose 0.2 does, so workers see one ``PCAPData`` per trigger with scalar fields.  The
captured fields (``energy``, ``INENC3.VAL.Mean``, ...) are model extras, read with
``getattr`` or ``model_extra``.

``dranspose_fast.middlewares.pcap.parse`` turns received frames into these models;
``to_stream_data`` goes the other way, for replay sources and tests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData, make_stream_data

__all__ = [
    "PCAPBase",
    "PCAPData",
    "PCAPDecodeError",
    "PCAPEnd",
    "PCAPPacket",
    "PCAPPacketType",
    "PCAPStart",
]

_TYP = "PCAP"


class PCAPDecodeError(DecodeError):
    """A PCAP frame could not be decoded; the message names the frame and the field."""


class PCAPBase(BaseModel):
    """Fields every PCAP message carries."""

    message_id: int
    version: Literal[1]

    def to_stream_data(self) -> StreamData:
        """The message as the PandA device sends it: one JSON frame, ``typ="PCAP"``."""
        return make_stream_data(_TYP, [self.model_dump_json().encode()])


class PCAPStart(PCAPBase):
    """Start of a series.

    Examples
    --------
    >>> s = PCAPStart(message_id=1, version=1, message_type="series-start",
    ...               arm_time="2024-10-07T08:49:10.627Z")
    >>> s.arm_time.year
    2024
    """

    model_config = ConfigDict(extra="allow")

    message_type: Literal["series-start"]
    arm_time: datetime


class PCAPData(PCAPBase):
    """Captured values: one row (after the ingester's split) or a block of rows (upstream).

    Examples
    --------
    >>> row = PCAPData(message_id=2, version=1, message_type="data", frame_number=0,
    ...                energy=8879.1, inttime=7.116)
    >>> row.energy
    8879.1
    """

    model_config = ConfigDict(extra="allow")

    message_type: Literal["data"]
    frame_number: int


class PCAPEnd(PCAPBase):
    """End of a series.

    Examples
    --------
    >>> PCAPEnd(message_id=6, version=1, message_type="series-end").message_type
    'series-end'
    """

    model_config = ConfigDict(extra="allow")

    message_type: Literal["series-end"]


PCAPPacketType = Annotated[PCAPStart | PCAPData | PCAPEnd, Field(discriminator="message_type")]
"""Any PCAP message; ``parse`` returns this."""

PCAPPacket: TypeAdapter[PCAPStart | PCAPData | PCAPEnd] = TypeAdapter(PCAPPacketType)
"""Validator of PCAP messages (dranspose 0.2 name): ``PCAPPacket.validate_json(b)``."""
