"""Parser of PandA position capture lines (``typ="PCAP_RAW"``) for workers.

Stateful, as in dranspose 0.2: a header message sets ``arm_time`` and ``fields``; each later
row is read against those fields.  Differences from 0.2, on input it could not read anyway:
each header replaces the fields (0.2 appended them, so a second arm with other fields read
rows under the first arm's names); a row whose value count differs from the header's field
count is an error (0.2 silently dropped or ignored values); ``int32``/``uint64``/``int64``
fields read as ``int`` (0.2 knew ``uint32`` and ``double`` only); runs of blanks separate
values as one.  Rows build their models without pydantic validation (the values are already
``int``/``float``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

import zmq

from dranspose_fast._batch import construct
from dranspose_fast.data.positioncap import (
    INTEGER_TYPES,
    PositionCapDecodeError,
    PositionCapEnd,
    PositionCapField,
    PositionCapPacketType,
    PositionCapStart,
    PositionCapValues,
)
from dranspose_fast.event import StreamData

__all__ = ["PositionCapDecodeError", "PositioncapParser"]

_TYP: Final = "PCAP_RAW"
_ARM: Final = "arm_time: "
_Convert = Callable[[str], int | float]
_FIELD_SET: Final = frozenset({"name", "type", "value"})
_NOTHING_SET: Final = frozenset[str]()


def _converter(typ: str) -> _Convert | None:
    if typ == "double":
        return float
    if typ in INTEGER_TYPES:
        return int
    return None


class PositioncapParser:
    """Reads one PCAP_RAW stream's messages in order; keeps the last header's fields."""

    def __init__(self) -> None:
        self.arm_time: datetime | None = None
        self.fields: list[PositionCapField] = []
        self._columns: list[tuple[str, str, _Convert | None]] = []

    def parse(self, data: StreamData) -> PositionCapPacketType:
        """Decode one message: a header, a row of values or an ``END`` line.

        Parameters
        ----------
        data : StreamData
            ``typ="PCAP_RAW"`` with one frame of ASCII text.

        Returns
        -------
        PositionCapStart | PositionCapValues | PositionCapEnd
            Rows carry ``fields``: name -> ``PositionCapField`` with its ``value``.

        Raises
        ------
        PositionCapDecodeError
            A ``DecodeError`` naming what is wrong: typ, frame count, text that is not
            UTF-8, a header without a readable ``arm_time`` or with a short field line, a row
            before any header, a value count that differs from the header's, or a value that
            is not a number of its field's type.
        """
        if data.typ != _TYP:
            raise PositionCapDecodeError(
                f"position capture parse got StreamData of typ {data.typ!r}, expected 'PCAP_RAW'")
        frames = data.frames
        if len(frames) != 1:
            raise PositionCapDecodeError(
                f"PCAP_RAW message has {len(frames)} frames, expected 1 (a line)")
        frame = frames[0]
        raw = frame.bytes if isinstance(frame, zmq.Frame) else frame
        try:
            text = raw.decode() if type(raw) is bytes else bytes(raw).decode()
        except UnicodeDecodeError as exc:
            raise PositionCapDecodeError(f"PCAP_RAW frame 0 is not UTF-8 text: {exc}") from None
        except TypeError:
            raise PositionCapDecodeError(
                f"PCAP_RAW frame 0 is a {type(frame).__name__}, expected bytes") from None
        if text.startswith("arm_time:"):
            return self._header(text)
        if text.startswith("END"):
            return PositionCapEnd()
        return self._row(text)

    def _header(self, text: str) -> PositionCapStart:
        arm_time: datetime | None = None
        fields: list[PositionCapField] = []
        for number, line in enumerate(text.split("\n"), 1):
            if line.startswith(_ARM):
                stamp = line[len(_ARM):].strip()
                try:
                    # naive, as 0.2 returned it (it dropped the "Z")
                    arm_time = datetime.fromisoformat(stamp.replace("Z", ""))
                except ValueError:
                    raise PositionCapDecodeError(
                        f"PCAP_RAW header line {number}: arm_time {stamp[:40]!r} is not an "
                        "ISO 8601 time") from None
            elif line.startswith(" "):
                parts = line.split()
                if len(parts) < 3:
                    raise PositionCapDecodeError(
                        f"PCAP_RAW header line {number}: field line {line[:60]!r} has "
                        f"{len(parts)} words, expected 'NAME TYPE CAPTURE'")
                fields.append(PositionCapField(name=f"{parts[0]}.{parts[2]}", type=parts[1]))
        if arm_time is None:
            raise PositionCapDecodeError("PCAP_RAW header has no 'arm_time: <time>' line")
        self.arm_time = arm_time
        self.fields = fields
        self._columns = [(f.name, f.type, _converter(f.type)) for f in fields]
        return PositionCapStart(arm_time=arm_time)

    def _row(self, text: str) -> PositionCapValues:
        if self.arm_time is None:
            raise PositionCapDecodeError(
                "PCAP_RAW row before any header: cannot read data without its arm message")
        values = text.split()
        columns = self._columns
        if len(values) != len(columns):
            raise PositionCapDecodeError(
                f"PCAP_RAW row has {len(values)} values, the header declares "
                f"{len(columns)} fields")
        out: dict[str, PositionCapField] = {}
        for (name, typ, convert), value in zip(columns, values, strict=True):
            if convert is None:
                raise PositionCapDecodeError(
                    f"field {name!r} has type {typ!r}, expected 'double' or one of "
                    f"{sorted(INTEGER_TYPES)}")
            try:
                number = convert(value)
            except ValueError:
                raise PositionCapDecodeError(
                    f"PCAP_RAW row: field {name!r}: {value[:40]!r} is not a {typ}") from None
            out[name] = construct(PositionCapField, {"name": name, "type": typ, "value": number},
                                  _FIELD_SET)
        return construct(PositionCapValues, {"fields": out}, _NOTHING_SET)
