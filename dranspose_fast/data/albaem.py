"""Messages of the ALBA electrometer (AlbaEM) stream: ``series-start``, ``data``, ``series-end``.

Each message is one ZeroMQ frame of JSON; a ``data`` message carries one reading of the four
channels (``channel1`` .. ``channel4`` as extra fields).  There is no middleware, as in
dranspose 0.2: workers call ``AlbaemPacket.validate_json(frames[0])`` (a ``zmq.Frame`` needs
``.bytes``; ``bytes`` frames, as replays give, go as they are).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

__all__ = ["AlbaemBase", "AlbaemData", "AlbaemEnd", "AlbaemPacket", "AlbaemStart"]


class AlbaemBase(BaseModel):
    """Fields every AlbaEM message carries."""

    message_id: int
    version: Literal[1]


class AlbaemStart(AlbaemBase):
    """Start of a series.

    Examples
    --------
    >>> AlbaemStart(message_id=1, version=1, message_type="series-start").message_id
    1
    """

    model_config = ConfigDict(extra="allow")

    message_type: Literal["series-start"]


class AlbaemData(AlbaemBase):
    """One reading; the channel values are extras (``channel1`` .. ``channel4``).

    Examples
    --------
    >>> d = AlbaemData(message_id=2, version=1, message_type="data", frame_number=0,
    ...                timestamp=7.7, acquisition_timestamp=1704807770443944912, channel1=-2.8e-11)
    >>> d.channel1
    -2.8e-11
    """

    model_config = ConfigDict(extra="allow")

    message_type: Literal["data"]
    frame_number: int
    timestamp: float
    acquisition_timestamp: int


class AlbaemEnd(AlbaemBase):
    """End of a series (``detector_specific`` reports overflows).

    Examples
    --------
    >>> AlbaemEnd(message_id=6, version=1, message_type="series-end").message_type
    'series-end'
    """

    model_config = ConfigDict(extra="allow")

    message_type: Literal["series-end"]


AlbaemPacket: TypeAdapter[AlbaemStart | AlbaemData | AlbaemEnd] = TypeAdapter(
    AlbaemStart | AlbaemData | AlbaemEnd
)
"""Validator of any AlbaEM message (dranspose 0.2 name): ``AlbaemPacket.validate_json(b)``."""
