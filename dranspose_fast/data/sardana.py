"""Messages Sardana's recorder posts over HTTP, as dranspose 0.2 models them (typ ``sardana``).

A scan is one ``SardanaDataDescription`` (the column description), one ``SardanaRecordData``
per point (a flat object of column values) and one ``SardanaRecordEnd``.  Every model keeps
unknown fields as extras (``column_desc``, ``counters``, the column values of a record, ...),
read as attributes as in 0.2.  The HTTP ingester (``dranspose_fast.ingesters.http_sardana``)
forwards each as one JSON frame; ``dranspose_fast.middlewares.sardana.parse`` reads it back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from dranspose_fast.errors import DecodeError

__all__ = [
    "SardanaDataDescription",
    "SardanaDecodeError",
    "SardanaPacket",
    "SardanaPacketType",
    "SardanaRecordData",
    "SardanaRecordEnd",
]


class SardanaDecodeError(DecodeError):
    """A sardana frame could not be decoded; the message names the frame and the field."""


class SardanaDataDescription(BaseModel):
    """Start of a scan: its number, directory, title and (as extras) the column description.

    Examples
    --------
    >>> d = SardanaDataDescription(serialno=20338, scandir="/data/x", title="ascan m 0 1 2 1",
    ...                            ref_moveables=["m"])
    >>> d.type, d.ref_moveables
    ('DataDescription', ['m'])
    """

    model_config = ConfigDict(extra="allow")
    type: Literal["DataDescription"] = "DataDescription"
    serialno: int
    scandir: str
    title: str


class SardanaRecordData(BaseModel):
    """One scan point: its timestamp and (as extras) one value per column, e.g. ``point_nb``.

    Examples
    --------
    >>> SardanaRecordData(timestamp=0.61, point_nb=8, dummy_mot_01=0.0).point_nb
    8
    """

    model_config = ConfigDict(extra="allow")
    type: Literal["RecordData"] = "RecordData"
    timestamp: float


class SardanaRecordEnd(BaseModel):
    """End of a scan."""

    model_config = ConfigDict(extra="allow")
    type: Literal["RecordEnd"] = "RecordEnd"


SardanaPacketType = SardanaDataDescription | SardanaRecordData | SardanaRecordEnd

#: Validates a decoded JSON object as whichever of the three models it is (0.2's smart union).
SardanaPacket: TypeAdapter[SardanaPacketType] = TypeAdapter(SardanaPacketType)
