"""Messages of the PandA position capture (PCAP) data port: ASCII lines over raw TCP.

The PandA answers a client's empty options line with ``OK``, then for every arm sends a header
(``arm_time: ...``, ``missed:``, ``process:``, ``format:``, ``fields:`` and one line per
captured field, `` NAME TYPE CAPTURE``, up to a blank line), one line of values per trigger and
an ``END <n> <reason>`` line.  The ingester (``dranspose_fast.ingesters.tcp_positioncap``)
sends the header as one message and every further line as one message (``typ="PCAP_RAW"``).

``dranspose_fast.middlewares.positioncap.PositioncapParser`` turns them into these models (it
remembers the fields of the last header); ``to_stream_data`` goes the other way.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, TypeAdapter

from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData, make_stream_data

__all__ = [
    "INTEGER_TYPES",
    "PositionCapDecodeError",
    "PositionCapEnd",
    "PositionCapField",
    "PositionCapPacket",
    "PositionCapPacketType",
    "PositionCapStart",
    "PositionCapValues",
]

_TYP = "PCAP_RAW"

#: Field types whose values are read as ``int`` (dranspose 0.2 knew ``uint32`` only).
INTEGER_TYPES = frozenset({"uint32", "int32", "uint64", "int64"})


class PositionCapDecodeError(DecodeError):
    """A position capture line could not be read; the message names the line and the field."""


class PositionCapField(BaseModel):
    """One captured field (``name`` is ``BLOCK.FIELD.CAPTURE``) and, in a row, its value."""

    name: str
    type: str
    value: int | float | None = None

    def parse(self, value: str) -> PositionCapField:
        """This field with ``value`` read by its type (``double``: float, integers: int).

        Raises
        ------
        PositionCapDecodeError
            if the type is unknown or the text is not a number of that type.
        """
        number: int | float
        try:
            if self.type == "double":
                number = float(value)
            elif self.type in INTEGER_TYPES:
                number = int(value)
            else:
                raise PositionCapDecodeError(
                    f"field {self.name!r} has type {self.type!r}, expected 'double' or one of "
                    f"{sorted(INTEGER_TYPES)}")
        except ValueError as exc:
            if isinstance(exc, PositionCapDecodeError):
                raise
            raise PositionCapDecodeError(
                f"field {self.name!r}: {value!r} is not a {self.type}") from None
        return PositionCapField(name=self.name, type=self.type, value=number)


class PositionCapStart(BaseModel):
    """The header of one arm: its time (the fields are the parser's state)."""

    arm_time: datetime

    def to_stream_data(self, fields: list[PositionCapField]) -> StreamData:
        """The header as the PandA sends it (ASCII, scaled), for ``fields``."""
        lines = [f"arm_time: {self.arm_time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}",
                 "missed: 0", "process: Scaled", "format: ASCII", "fields:"]
        for field in fields:
            block, _, capture = field.name.rpartition(".")
            lines.append(f" {block} {field.type} {capture}")
        return make_stream_data(_TYP, [("\n".join(lines) + "\n").encode()])


class PositionCapValues(BaseModel):
    """One row: every field of the header with its value, by name."""

    fields: dict[str, PositionCapField] = {}

    def to_stream_data(self) -> StreamData:
        """The row as the PandA sends it: the values, space-separated."""
        line = " " + " ".join(str(f.value) for f in self.fields.values()) + "\n"
        return make_stream_data(_TYP, [line.encode()])


class PositionCapEnd(BaseModel):
    """The end of one arm."""

    def to_stream_data(self) -> StreamData:
        """An ``END`` line (the PandA sends the row count and the reason)."""
        return make_stream_data(_TYP, [b"END 0 Disarmed\n"])


PositionCapPacketType = PositionCapStart | PositionCapValues | PositionCapEnd
"""Any position capture message; ``PositioncapParser.parse`` returns this."""

PositionCapPacket: TypeAdapter[PositionCapPacketType] = TypeAdapter(PositionCapPacketType)
"""Validator of the models (dranspose 0.2 name)."""
