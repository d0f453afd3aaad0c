"""Messages of the LeCroy MAUI oscilloscope streamer, and one parsed trigger sequence.

The streamer sends control messages (one JSON frame, ``htype="msg"``, ``what`` =
``WhatEnum``: ``PREPARE`` an acquisition, ``START`` a sequence with its ``channels``,
``SEQEND``, ``STOP`` with the number of ``frames``) and one "traces" message per channel and
trigger of three frames: JSON metadata (``LecroyData``), the raw waveforms, and the pickled
list of trigger timestamps.  The ingester turns a sequence (start, traces of every channel,
end) into one event message; ``dranspose_fast.middlewares.lecroy.parse`` reads it into a
``LecroyParsed`` whose ``data`` are numpy views of the received waveform frames.
"""

from __future__ import annotations

import pickle
from enum import IntEnum
from typing import Any, Literal

import numpy as np
import zmq
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, TypeAdapter

from dranspose_fast.event import StreamData, make_stream_data

__all__ = [
    "LECROY_TYPE",
    "LecroyBase",
    "LecroyData",
    "LecroyEnd",
    "LecroyPacket",
    "LecroyParsed",
    "LecroyPrepare",
    "LecroySeqEnd",
    "LecroySeqStart",
    "WhatEnum",
]

#: ``StreamData.typ`` of LeCroy streams (dranspose 0.2's string).
LECROY_TYPE = "lecroy_9fwdWp6Rq7"


class WhatEnum(IntEnum):
    """The ``what`` field of a control message."""

    PREPARE = 0
    START = 1
    SEQEND = 2
    STOP = 3


class LecroyBase(BaseModel):
    """Fields of every LeCroy message; unknown fields are ignored, as in dranspose 0.2."""

    frame: int

    def to_stream_data(self) -> StreamData:
        """The message as the streamer sends it: one JSON frame.

        (dranspose 0.2 handed ``zmq.Frame`` a ``str`` here, which raises; this encodes it.)
        """
        return make_stream_data(LECROY_TYPE, [self.model_dump_json().encode()])


class LecroyPrepare(LecroyBase):
    """An acquisition is prepared (``what=0``): the start event of a scan.

    Examples
    --------
    >>> LecroyPrepare(htype="msg", what=0, frame=0).what
    <WhatEnum.PREPARE: 0>
    """

    htype: Literal["msg"]
    what: Literal[WhatEnum.PREPARE]


class LecroySeqStart(LecroyBase):
    """A sequence starts (``what=1``); ``ntriggers == -1`` means continuous mode."""

    htype: Literal["msg"]
    what: Literal[WhatEnum.START]
    ntriggers: int
    seqno: int
    channels: list[int]


class LecroySeqEnd(LecroyBase):
    """A sequence ends (``what=2``)."""

    htype: Literal["msg"]
    what: Literal[WhatEnum.SEQEND]


class LecroyEnd(LecroyBase):
    """The acquisition stops (``what=3``) after ``frames`` trace messages: the end event."""

    frames: int
    what: Literal[WhatEnum.STOP]


class LecroyData(LecroyBase):
    """Metadata of one channel's traces (first of the three frames of a "traces" message).

    ``shape`` and ``dtype`` describe the waveform frame; ``horiz_offset`` and
    ``horiz_interval`` place its samples in time.
    """

    htype: Literal["traces"]
    ch: int
    ts: float
    frame: int
    shape: list[int]
    dtype: str
    horiz_offset: float
    horiz_interval: float


class LecroyParsed(LecroySeqStart):
    """One sequence: its start fields, then per channel the metadata, waveforms, timestamps.

    ``data[i]`` belongs to ``meta[i]`` and ``timestamps[i]``, in the order the channels came.
    """

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    meta: list[LecroyData] = []
    data: list[NDArray[Any]] = []
    timestamps: list[list[float]] = []

    def to_stream_data(self) -> StreamData:
        """The whole sequence as the ingester forwards it: start, traces per channel, end.

        The end message's ``frame`` is the last trace's plus one, as the streamer numbers it.
        (dranspose 0.2 could not serialise a parsed sequence at all.)
        """
        start = LecroySeqStart.model_validate(
            {name: getattr(self, name) for name in LecroySeqStart.model_fields})
        frames: list[Any] = [start.model_dump_json().encode()]
        for meta, data, stamps in zip(self.meta, self.data, self.timestamps, strict=True):
            raw = np.ascontiguousarray(data, dtype=meta.dtype).reshape(-1).view(np.uint8)
            frames += [meta.model_dump_json().encode(),
                       raw.tobytes() if raw.nbytes < zmq.COPY_THRESHOLD
                       else zmq.Frame(raw, copy=False),
                       pickle.dumps(list(stamps))]
        last = self.meta[-1].frame + 1 if self.meta else self.frame
        frames.append(LecroySeqEnd(htype="msg", what=WhatEnum.SEQEND, frame=last)
                      .model_dump_json().encode())
        return make_stream_data(LECROY_TYPE, frames)


LecroyPacket: TypeAdapter[Any] = TypeAdapter(
    LecroyPrepare | LecroySeqStart | LecroyEnd | LecroySeqEnd | LecroyData | LecroyParsed
)
"""Validator of any LeCroy JSON frame (dranspose 0.2 name): ``LecroyPacket.validate_json(b)``."""
