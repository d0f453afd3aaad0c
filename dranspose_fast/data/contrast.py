"""Messages of contrast, the NanoMAX scan software, as it publishes scan progress.

Every message is one ZeroMQ frame holding a pickled ``dict``: ``status`` is ``"started"``
(with the scan's ``path``, ``scannr``, ``description`` and a ``snapshot`` of motor positions),
``"running"`` (one per scan point: ``dt`` plus the point's detector and motor readings, often
numpy arrays), ``"finished"`` or ``"heartbeat"``.  Fields beyond the declared ones are kept as
model extras and read as attributes, as in dranspose 0.2 (``packet.pseudo["x"]``).

``dranspose_fast.middlewares.contrast.parse`` reads received frames into these models (with a
restricted unpickler, never plain ``pickle.loads``); ``to_stream_data`` goes the other way.
"""

from __future__ import annotations

import pickle
from typing import Literal

import zmq
from pydantic import BaseModel, ConfigDict, TypeAdapter

from dranspose_fast.event import StreamData, make_stream_data

__all__ = [
    "CONTRAST_TYPE",
    "ContrastBase",
    "ContrastFinished",
    "ContrastHeartbeat",
    "ContrastPacket",
    "ContrastRunning",
    "ContrastStarted",
]

#: ``StreamData.typ`` of contrast streams (dranspose 0.2's string).
CONTRAST_TYPE = "contrast"


class ContrastBase(BaseModel):
    """What every contrast message can do: go back to the frame contrast sends."""

    def to_stream_data(self) -> StreamData:
        """One frame, the pickled ``model_dump()``, as contrast publishes it.

        Returns
        -------
        StreamData
            ``typ="contrast"``.
        """
        payload = pickle.dumps(self.model_dump())
        # The frame policy of dranspose_fast.event: bytes below the copy threshold.
        frame = payload if len(payload) < zmq.COPY_THRESHOLD else zmq.Frame(payload, copy=False)
        return make_stream_data(CONTRAST_TYPE, [frame])


class ContrastStarted(ContrastBase):
    """A scan starts; ``snapshot`` (an extra) holds the motor positions.

    Examples
    --------
    >>> ContrastStarted(path="/data/raw/dummy", scannr=2, description="mesh sx -2 2 3").status
    'started'
    """

    model_config = ConfigDict(extra="allow")

    status: Literal["started"] = "started"
    path: str
    scannr: int
    description: str


class ContrastRunning(ContrastBase):
    """One scan point: ``dt`` and, as extras, the readings (``sx``, ``pseudo``, ``panda0``...).

    Examples
    --------
    >>> ContrastRunning(dt=2.41, sx=-2.0).sx
    -2.0
    """

    model_config = ConfigDict(extra="allow")

    status: Literal["running"] = "running"
    dt: float


class ContrastFinished(ContrastBase):
    """The scan ended; the same fields as ``ContrastStarted``."""

    model_config = ConfigDict(extra="allow")

    status: Literal["finished"] = "finished"
    path: str
    scannr: int
    description: str


class ContrastHeartbeat(ContrastBase):
    """Sent between scans to show contrast is alive; other fields are ignored."""

    status: Literal["heartbeat"]


ContrastPacket: TypeAdapter[
    ContrastStarted | ContrastRunning | ContrastFinished | ContrastHeartbeat
] = TypeAdapter(ContrastStarted | ContrastRunning | ContrastFinished | ContrastHeartbeat)
"""Validator of any contrast message (dranspose 0.2 name): ``ContrastPacket.validate_python(d)``."""
