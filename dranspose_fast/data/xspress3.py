"""Messages of the Xspress3 X-ray fluorescence detector stream (its Tango device's ZeroMQ PUB).

A series is one ``XspressStart`` (``htype="header"``), one ``XspressImage`` per frame and one
``XspressEnd`` (``htype="series_end"``).  An image is three parts: the JSON header, the raw
spectra (``shape`` of ``type``) and a pickled list of per-channel metadata arrays.  Older
devices send the three parts as three separate messages; the ingester joins them into one
three-frame message, so workers always see ``[header, spectra, meta]``.

``dranspose_fast.middlewares.xspress.parse`` turns received frames into these models and adds
``.data`` (the spectra) and ``.meta`` (the metadata by name); ``to_stream_data`` goes the other
way, for replay sources and tests.
"""

from __future__ import annotations

import pickle
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, TypeAdapter

from dranspose_fast.data.stream1 import array_frame, as_frame
from dranspose_fast.errors import DecodeError
from dranspose_fast.event import StreamData, make_stream_data

__all__ = [
    "META_NAMES",
    "XspressBase",
    "XspressDecodeError",
    "XspressEnd",
    "XspressImage",
    "XspressPacket",
    "XspressStart",
]

#: Names of the pickled metadata arrays, in the order the device sends them.
META_NAMES: tuple[str, ...] = (
    "ocr", "AllEvents", "AllGood", "ClockTicks", "TotalTicks", "ResetTicks", "event_widths",
    "dtc",
)


class XspressDecodeError(DecodeError):
    """An Xspress3 message could not be decoded; the message names the frame and field.

    ``field`` is the part that is wrong (``"htype"``, ``"shape"``, ``"data"``, ``"meta"``, ...).
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class XspressBase(BaseModel):
    """What every Xspress3 message can do: turn itself back into frames."""

    def to_stream_data(self) -> StreamData:
        """Frames as the ingester forwards them: JSON header, then spectra and meta if set.

        Returns
        -------
        StreamData
            ``typ="xspress"``; the spectra frame is the array's memory where it is large and
            contiguous (no copy), the meta frame a pickle of the metadata values in order.
        """
        head = self.model_dump_json(exclude={"data", "meta"}).encode()
        frames: list[Any] = [head]
        extra = self.__pydantic_extra__ or {}
        if "data" in extra:
            data = extra["data"]
            frames.append(array_frame(data) if isinstance(data, np.ndarray) else as_frame(data))
        if "meta" in extra:
            # Pickling our own arrays is safe; only unpickling network data is not.
            frames.append(pickle.dumps(list(extra["meta"].values())))
        return make_stream_data("xspress", frames)


class XspressStart(XspressBase):
    """Start of a series; extra fields (``overwritable``) are kept as attributes.

    Examples
    --------
    >>> XspressStart(filename="/data/scan_000002_xspress3.hdf5", overwritable=False).htype
    'header'
    """

    model_config = ConfigDict(extra="allow")

    htype: Literal["header"] = "header"
    filename: str


class XspressImage(XspressBase):
    """One frame of spectra: the header fields; ``parse`` adds ``.data`` and ``.meta``.

    ``.data`` is an array of ``shape`` (channels x bins) and dtype ``type``; ``.meta`` maps
    ``ocr``, ``AllEvents``, ``AllGood``, ``ClockTicks``, ``TotalTicks``, ``ResetTicks``,
    ``event_widths`` and ``dtc`` to one array each (one value per channel).

    Examples
    --------
    >>> import numpy as np
    >>> img = XspressImage(frame=0, shape=[4, 8], type="uint32",
    ...                    data=np.zeros((4, 8), np.uint32), meta={"ocr": np.zeros(4)})
    >>> len(img.to_stream_data().frames)
    3
    """

    model_config = ConfigDict(extra="allow")

    htype: Literal["image"] = "image"
    frame: int
    shape: list[int]
    exptime: float | None = 1
    type: str
    compression: str | None = "none"


class XspressEnd(XspressBase):
    """End of a series.

    Examples
    --------
    >>> XspressEnd().htype
    'series_end'
    """

    model_config = ConfigDict(extra="allow")

    htype: Literal["series_end"] = "series_end"


XspressPacket: TypeAdapter[XspressStart | XspressImage | XspressEnd] = TypeAdapter(
    XspressStart | XspressImage | XspressEnd
)
"""Validator of Xspress3 headers (dranspose 0.2 name): ``XspressPacket.validate_json(b)``.

A plain (not discriminated) union as in 0.2, so it accepts what 0.2 accepted.
"""

