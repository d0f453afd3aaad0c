"""Messages of DECTRIS Stream V2, the CBOR stream of EIGER2 and PILATUS4 detectors (2022.1+).

A series is one start message (sent at arm: the detector's configuration), one image message
per exposure (every active channel, i.e. threshold, of that exposure) and one end message
(at disarm).  Each is one CBOR map in one ZeroMQ message; the detector PUSHes them from port
31001.  ``dranspose_fast.middlewares.stream2.parse`` decodes one into these models.

Field names and types are the ones of the DECTRIS Stream V2 interface description.  Every
field but ``type``, ``series_id`` (and ``channels`` of a start, ``image_id`` and ``data`` of an
image) may be missing: the detector's ``header_detail`` setting leaves out the flat-fields,
pixel masks and count-rate table unless it is ``"all"``.  A field the description does not
list (a newer firmware's) is kept as an extra attribute (``model.model_extra``), not dropped.

Arrays are numpy arrays of the image's shape (rows, columns) and dtype; uncompressed ones are
read-only views of the received message, compressed ones are decompressed once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from dranspose_fast._stream2 import Stream2DecodeError

__all__ = [
    "GoniometerAxis", "Rational", "Stream2", "Stream2DecodeError", "Stream2End", "Stream2Image",
    "Stream2Start",
]

_Array = np.ndarray[Any, Any]


class Rational(NamedTuple):
    """A time as the spec sends it: ``numerator / denominator`` seconds, where the denominator
    is the detector's time base (constant over a series), so no precision is lost.

    Examples
    --------
    >>> float(Rational(3, 2))
    1.5
    """

    numerator: int
    denominator: int

    def __float__(self) -> float:
        return self.numerator / self.denominator

    @property
    def seconds(self) -> float:
        """The value in seconds, as a float."""
        return self.numerator / self.denominator


class GoniometerAxis(BaseModel):
    """One goniometer axis of a start message: ``start`` and ``increment`` (per image)."""

    model_config = ConfigDict(extra="allow")

    start: float | None = None
    increment: float | None = None


class Stream2(BaseModel):
    """Base of the three Stream V2 messages.

    Two messages are equal when their fields are, arrays compared by value (``==`` of models
    holding arrays would otherwise be ambiguous).
    """

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    type: str
    series_id: int
    series_unique_id: str | None = None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Stream2)
        return _same(self.__dict__, other.__dict__) and _same(
            self.__pydantic_extra__ or {}, other.__pydantic_extra__ or {}
        )

    __hash__ = None  # type: ignore[assignment]


class Stream2Start(Stream2):
    """Start of a series (sent at arm): the series' configuration.

    Examples
    --------
    >>> Stream2Start(type="start", series_id=7, channels=["threshold_1"]).channels
    ['threshold_1']
    """

    type: Literal["start"]
    #: Active channel names; image data come in this order.
    channels: list[str]
    arm_date: datetime | None = None
    beam_center_x: float | None = None
    beam_center_y: float | None = None
    count_time: float | None = None
    countrate_correction_enabled: bool | None = None
    countrate_correction_lookup_table: _Array | None = None
    detector_description: str | None = None
    detector_serial_number: str | None = None
    detector_translation: list[float] | None = None
    #: Channel name to flat-field (``header_detail="all"`` only).
    flatfield: dict[str, _Array] | None = None
    flatfield_enabled: bool | None = None
    frame_time: float | None = None
    goniometer: dict[str, GoniometerAxis] | None = None
    image_size_x: int | None = None
    image_size_y: int | None = None
    incident_energy: float | None = None
    incident_wavelength: float | None = None
    number_of_images: int | None = None
    #: Channel name to 32-bit pixel mask (``header_detail="all"`` only).
    pixel_mask: dict[str, _Array] | None = None
    pixel_mask_enabled: bool | None = None
    pixel_size_x: float | None = None
    pixel_size_y: float | None = None
    saturation_value: int | None = None
    sensor_material: str | None = None
    sensor_thickness: float | None = None
    #: Channel name to threshold energy (eV).
    threshold_energy: dict[str, float] | None = None
    user_data: Any = None
    virtual_pixel_interpolation_enabled: bool | None = None


class Stream2Image(Stream2):
    """One exposure: ``data`` maps each channel name to its image.

    Examples
    --------
    >>> img = Stream2Image(type="image", series_id=7, image_id=0,
    ...                    data={"threshold_1": np.zeros((2, 3), "<u2")})
    >>> img.data["threshold_1"].shape
    (2, 3)
    """

    type: Literal["image"]
    image_id: int
    #: Channel name to image (rows, columns), in the order of the start's ``channels``.
    data: dict[str, _Array]
    real_time: Rational | None = None
    series_date: datetime | None = None
    start_time: Rational | None = None
    stop_time: Rational | None = None
    user_data: Any = None


class Stream2End(Stream2):
    """End of a series (sent at disarm).

    Examples
    --------
    >>> Stream2End(type="end", series_id=7).series_id
    7
    """

    type: Literal["end"]


def _same(a: Any, b: Any) -> bool:
    """Equality that compares numpy arrays by value, inside containers too."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                and a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    return bool(a == b)
