"""Messages of the DECTRIS Eiger legacy stream ("Stream V1", ``htype`` ``d...-1.0``).

A series is one header message (``dheader-1.0``: part 1 this JSON, part 2 the detector
configuration, with ``header_detail="all"`` six more parts of flat-field, pixel mask and
count-rate table, and part 9 the user's appendix), one image message per frame
(``dimage-1.0``: part 1 this JSON, part 2 the data description, part 3 the image, part 4 the
times, part 5 the image appendix) and one end message (``dseries_end-1.0``).

These models validate part 1 only, with the names and fields of dranspose 0.2;
``dranspose_fast.middlewares.eiger_legacy.parse`` reads the other parts into ``.info`` /
``.appendix`` (header) and ``.data`` / ``.config`` (image), as 0.2 does.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr, TypeAdapter

from dranspose_fast.errors import DecodeError

__all__ = [
    "EigerLegacy",
    "EigerLegacyDecodeError",
    "EigerLegacyEnd",
    "EigerLegacyHeader",
    "EigerLegacyImage",
    "EigerLegacyPacket",
]


class EigerLegacyDecodeError(DecodeError):
    """An Eiger legacy message could not be read; the message names the part and field."""


class ArrayHolder:
    """Carries a derived array; every holder equals every other, so ``==`` of two packets
    compares their fields only (an array would make it ambiguous)."""

    __slots__ = ("value",)

    def __init__(self, value: np.ndarray[Any, Any]) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArrayHolder)

    __hash__ = None  # type: ignore[assignment]


class EigerLegacy(BaseModel):
    """Base of the three Eiger legacy messages."""


class EigerLegacyHeader(EigerLegacy):
    """Start of a series (part 1 of the header message).

    ``parse`` adds ``.info`` (part 2, the detector configuration: ``nimages``, ``compression``,
    ``x_pixels_in_detector``, ...) and ``.appendix`` (the last part, the user's appendix).

    Examples
    --------
    >>> EigerLegacyHeader(htype="dheader-1.0", header_detail="all", series=6).series
    6
    """

    model_config = ConfigDict(extra="allow")

    htype: Literal["dheader-1.0"]


class EigerLegacyImage(EigerLegacy):
    """One image (part 1 of the image message: ``frame``, ``series``, ``hash``).

    ``parse`` adds ``.data`` (part 2, the data description: ``shape``, ``type``, ``encoding``,
    ``size``, plus ``"buffer"``: the image part as received) and ``.config`` (part 4: the
    ``start_time``, ``stop_time`` and ``real_time`` of the frame).  ``array`` is the image as
    a numpy array when it was sent uncompressed (an addition to dranspose 0.2).

    Examples
    --------
    >>> EigerLegacyImage(htype="dimage-1.0", frame=0, series=6).frame
    0
    """

    model_config = ConfigDict(extra="allow")

    htype: Literal["dimage-1.0"]
    frame: int
    # The numpy view parse makes of an uncompressed image part, in a holder that keeps it out
    # of model equality (it is derived from ``data``, which is compared).
    _array: ArrayHolder | None = PrivateAttr(default=None)

    @property
    def array(self) -> np.ndarray[Any, Any] | None:
        """The image part as a read-only numpy array of ``data["shape"]`` and ``data["type"]``
        (byte order from ``data["encoding"]``), a view of the received frame, not a copy.

        ``None`` when the image is compressed (``encoding`` such as ``"bs32-lz4<"``): then
        ``data["buffer"]`` holds the compressed bytes, as in dranspose 0.2.
        """
        holder = self._array
        return None if holder is None else holder.value


class EigerLegacyEnd(EigerLegacy):
    """End of a series.

    Examples
    --------
    >>> EigerLegacyEnd(htype="dseries_end-1.0", series=6).htype
    'dseries_end-1.0'
    """

    model_config = ConfigDict(extra="allow")

    htype: Literal["dseries_end-1.0"]


EigerLegacyPacket: TypeAdapter[EigerLegacyHeader | EigerLegacyImage | EigerLegacyEnd] = (
    TypeAdapter(EigerLegacyHeader | EigerLegacyImage | EigerLegacyEnd)
)
"""Validator of part 1 of any Eiger legacy message (dranspose 0.2 name):
``EigerLegacyPacket.validate_json(frames[0])``."""
