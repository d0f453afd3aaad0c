"""Messages of the MAX IV "stream1" (STINS) protocol, as sent by the streaming-receiver.

A series is one ``Stream1Start`` (``htype="header"``), one ``Stream1Data`` per image
(``htype="image"``: a JSON header frame followed by the image payload frame) and one
``Stream1End`` (``htype="series_end"``).  Unknown header fields such as ``timestamps`` are kept
as model extras and read as attributes, as in dranspose 0.2.

``dranspose_fast.middlewares.stream1.parse`` turns received frames into these models;
``to_stream_data`` goes the other way, for replay sources and tests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import zmq
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter

from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData, make_stream_data

__all__ = [
    "Stream1",
    "Stream1Data",
    "Stream1End",
    "Stream1Packet",
    "Stream1PacketType",
    "Stream1Start",
    "StinsDecodeError",
]


class StinsDecodeError(DecodeError):
    """A STINS frame could not be decoded; the message names the field, frame or byte offset."""


class Stream1(BaseModel):
    """Fields every stream1 message carries."""

    model_config = ConfigDict(extra="allow")

    msg_number: int

    def to_stream_data(self) -> StreamData:
        """Frames as the streaming-receiver sends them: the JSON header, then the payload if any.

        Returns
        -------
        StreamData
            ``typ="STINS"``; frames below ``zmq.COPY_THRESHOLD`` are ``bytes``, larger ones
            zero-copy ``zmq.Frame`` objects.
        """
        frames: list[Any] = [as_frame(self.model_dump_json(exclude={"data"}).encode())]
        payload = self._payload_frame()
        if payload is not None:
            frames.append(payload)
        return make_stream_data("STINS", frames)

    def _payload_frame(self) -> bytes | zmq.Frame | None:
        extra = self.__pydantic_extra__ or {}
        if "data" not in extra:
            return None
        data = extra["data"]
        if isinstance(data, np.ndarray):
            return array_frame(data)
        return as_frame(data)


class Stream1Start(Stream1):
    """Start of a series.

    Examples
    --------
    >>> Stream1Start(msg_number=374, filename="/data/visitors/test.h5").htype
    'header'
    """

    htype: Literal["header"] = "header"
    filename: str


class Stream1Data(Stream1):
    """One image: the header fields; ``parse`` adds ``.data``, the decoded numpy array.

    ``type`` is a numpy dtype string (``"uint16"``, ``">u2"``), ``compression`` one of
    ``"none"``, ``"bslz4"``, ``"lz4"``.  For ``to_stream_data``, ``.data`` may be an array
    (written raw, only with ``compression="none"``) or bytes-like (the payload as is, e.g. an
    already compressed chunk).  A packet produced by ``parse`` re-emits the payload it came from.

    Examples
    --------
    >>> import numpy as np
    >>> img = Stream1Data(msg_number=375, frame=0, shape=[2, 3], type="uint16",
    ...                   compression="none", data=np.zeros((2, 3), np.uint16))
    >>> len(img.to_stream_data().frames)
    2
    """

    htype: Literal["image"] = "image"
    frame: int
    shape: list[int]
    type: str
    compression: str
    # (decoded array, received payload) of a parsed compressed image, so that
    # to_stream_data re-emits the original bytes instead of failing to re-compress.
    _payload: Any = PrivateAttr(default=None)

    def _payload_frame(self) -> bytes | zmq.Frame | None:
        extra = self.__pydantic_extra__ or {}
        if "data" not in extra:
            return None
        data = extra["data"]
        if not isinstance(data, np.ndarray):
            return as_frame(data)
        stored = self._payload
        if stored is not None and stored[0] is data:
            return as_frame(stored[1])
        if self.compression != "none":
            raise ValueError(
                f"Stream1Data.to_stream_data cannot compress an array as {self.compression!r}: "
                "set compression='none' or give .data as the compressed bytes"
            )
        return array_frame(data)


class Stream1End(Stream1):
    """End of a series.

    Examples
    --------
    >>> Stream1End(msg_number=376).htype
    'series_end'
    """

    htype: Literal["series_end"] = "series_end"


Stream1PacketType = Annotated[Stream1Start | Stream1Data | Stream1End, Field(discriminator="htype")]
"""Any stream1 message; ``parse`` returns this."""

Stream1Packet: TypeAdapter[Stream1Start | Stream1Data | Stream1End] = TypeAdapter(Stream1PacketType)
"""Validator of stream1 messages (dranspose 0.2 name): ``Stream1Packet.validate_json(b)``."""


# === Frames ===


def as_frame(buf: Any) -> bytes | zmq.Frame:
    """Apply the frame policy: copy below ``zmq.COPY_THRESHOLD``, zero-copy ``zmq.Frame`` above."""
    if isinstance(buf, zmq.Frame):
        return buf
    view = memoryview(buf)
    if view.nbytes < zmq.COPY_THRESHOLD or not view.c_contiguous:
        return buf if type(buf) is bytes else view.tobytes()
    return zmq.Frame(buf, copy=False)


def array_frame(data: np.ndarray[Any, Any]) -> bytes | zmq.Frame:
    """Raw C-order bytes of ``data``; large arrays are wrapped, not copied."""
    flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return as_frame(flat)
