"""DECTRIS Stream V2 messages built from the specification, with ``cbor2`` as independent encoder.

Stream V2 (DECTRIS' ``dectris/documentation``: ``stream_v2/README.md``) sends every message as
one ZeroMQ message from a PUSH socket: a CBOR map of text keys, ``type`` first, optionally behind
the self-describe tag 55799.  Images are RFC 8746 multi-dimensional arrays (tag 40, or 1040 for
column-major) around a typed array (tags 64..87), whose byte string may be a DECTRIS compressed
byte string (tag 56500 ``[algorithm, modifier, bytes]``, ``cbor/dectris-compression-tag.md``).

Nothing here uses ``dranspose_fast``: messages are encoded by ``cbor2`` and compressed by the
HDF5 filters of ``hdf5plugin``, so the tests and benchmarks of our decoder check it against
other people's code.  Messages are deterministic (same arguments, same bytes).

Run ``python -m tests.stream2_messages`` for a self-check: every kind of message decoded back by
``cbor2.loads`` with a tag hook like DECTRIS' example client, arrays compared.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import cbor2
import h5py
import hdf5plugin
import numpy as np
import zmq

from dranspose_fast.runtime.ports import free_port  # what tests.conftest.free_port hands out

__all__ = [
    "COUNT_TICKS",
    "EIGER2_500K",
    "FRAME_TICKS",
    "TIME_BASE",
    "Stream2Detector",
    "compress",
    "end_message",
    "image_message",
    "images",
    "multidim",
    "series",
    "start_message",
    "typed_array",
    "typed_array_tag",
]

Compression = Literal["none", "bslz4", "lz4"]

#: (rows, columns) of an EIGER2 500K image: DECTRIS' EIGER2 X/R 500K data sheets give
#: 1028 (horizontal) x 512 (vertical) pixels, one module; the Stream V2 test data in
#: dectris/documentation (``stream_v2/test_data/r500k_*``) come from such a detector.
EIGER2_500K: tuple[int, int] = (512, 1028)

#: Denominator of the image time rationals.  The spec only says it is the detector's time base
#: frequency, constant through a series; 100 MHz is our assumption.
TIME_BASE = 100_000_000
#: 10 ms between image starts; exposure 999.9 us shorter by a dead time (plausible, not measured).
FRAME_TICKS = 1_000_000
COUNT_TICKS = 999_900

# RFC 8746 section 2.1: a typed array tag is 0b010_f_s_e_ll (64..87): f float, s signed,
# e little endian, ll the size (1, 2, 4, 8 bytes; for floats 16, 32, 64, 128 bits).
_LL = {1: 0, 2: 1, 4: 2, 8: 3}
_FLOAT_LL = {2: 0, 4: 1, 8: 2, 16: 3}
_SERIES_DATE = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
_SELF_DESCRIBE = 55799
_COMPRESSED = 56500
_COMPRESSIONS: tuple[Compression, ...] = ("none", "bslz4", "lz4")


def typed_array_tag(dtype: np.dtype[Any] | str) -> int:
    """The RFC 8746 typed array tag of a numeric dtype (``"<u2"`` -> 69, ``">f4"`` -> 81).

    Single bytes get the plain tags (64 ``u1``, 72 ``i1``), not the clamped 68.
    """
    d = np.dtype(dtype)
    order = d.byteorder
    if order == "=":
        order = "<" if sys.byteorder == "little" else ">"
    little = 0 if d.itemsize == 1 else int(order == "<") << 2
    if d.kind == "f":
        return 64 | 16 | little | _FLOAT_LL[d.itemsize]
    if d.kind in "ui":
        return 64 | (8 if d.kind == "i" else 0) | little | _LL[d.itemsize]
    raise ValueError(f"no RFC 8746 typed array for dtype {d}")


def compress(array: np.ndarray, algorithm: Literal["bslz4", "lz4"]) -> bytes:
    """The array's bytes (C order) compressed as DECTRIS detectors send them.

    Both formats are the HDF5 filters' framing (bitshuffle filter 32008 with LZ4, LZ4 filter
    32004), which is what tag 56500 carries: the array is written as a one-chunk dataset of an
    in-memory HDF5 file through ``hdf5plugin``'s filter and the raw chunk is read back.

    Parameters
    ----------
    array
        A numeric array of at least one element.
    algorithm
        ``"bslz4"`` (bitshuffle + LZ4) or ``"lz4"``.

    Returns
    -------
    bytes
        The compressed chunk.

    Examples
    --------
    >>> from dectris.compression import decompress
    >>> a = np.arange(6, dtype="<u2").reshape(2, 3)
    >>> out = decompress(compress(a, "bslz4"), "bslz4", elem_size=2)
    >>> bytes(out) == a.tobytes()
    True
    """
    a = np.ascontiguousarray(array)
    if a.ndim == 0:
        a = a.reshape(1)
    filt = hdf5plugin.Bitshuffle(cname="lz4") if algorithm == "bslz4" else hdf5plugin.LZ4()
    with h5py.File(io.BytesIO(), "w") as h5:
        dset = h5.create_dataset("chunk", data=a, chunks=a.shape, **filt)
        mask, raw = dset.id.read_direct_chunk((0,) * a.ndim)
    if mask != 0:  # HDF5 skipped the filter (it does when a chunk would not shrink)
        raise ValueError(f"{algorithm}: HDF5 stored the chunk unfiltered")
    return bytes(raw)


def _payload(array: np.ndarray, compression: Compression) -> bytes | cbor2.CBORTag:
    """The typed array's content: the bytes, or tag 56500 around their compressed form."""
    if compression == "none":
        return array.tobytes()
    if compression == "bslz4":
        # The modifier is the bitshuffle element size.
        return cbor2.CBORTag(_COMPRESSED, ["bslz4", array.itemsize, compress(array, "bslz4")])
    if compression == "lz4":
        return cbor2.CBORTag(_COMPRESSED, ["lz4", 0, compress(array, "lz4")])  # 0: unused
    raise ValueError(f"unknown compression {compression!r}")


def typed_array(array: np.ndarray, compression: Compression = "none") -> cbor2.CBORTag:
    """A one-dimensional RFC 8746 typed array of the array's elements (C order)."""
    return cbor2.CBORTag(typed_array_tag(array.dtype),
                         _payload(np.ascontiguousarray(array), compression))


def multidim(array: np.ndarray, compression: Compression = "none", *,
             column_major: bool = False) -> cbor2.CBORTag:
    """An RFC 8746 multi-dimensional array: tag 40 ``[dims, typed array]``.

    Parameters
    ----------
    array
        A numeric array; its dtype's byte order is kept (``">u2"`` gives tag 65).
    compression
        ``"none"``, or the typed array's byte string as tag 56500 ``["bslz4", itemsize, ...]``
        or ``["lz4", 0, ...]``.
    column_major
        Tag 1040 instead: the same dimensions, the elements in column-major order.

    Returns
    -------
    cbor2.CBORTag
    """
    # The transpose's C order is the array's column-major order (RFC 8746 section 3.1.2).
    flat = np.ascontiguousarray(array.T if column_major else array)
    return cbor2.CBORTag(1040 if column_major else 40,
                         [list(array.shape), cbor2.CBORTag(typed_array_tag(array.dtype),
                                                           _payload(flat, compression))])


def _series_unique_id(series_id: int) -> str:
    # The spec only says "unique ID"; a name-based UUID keeps messages deterministic.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dranspose-fast/stream2/{series_id}"))


def _arm_date(series_id: int) -> dt.datetime:
    return _SERIES_DATE + dt.timedelta(minutes=series_id, microseconds=123_000)


def _encode(message: dict[str, Any], self_describe: bool) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(_SELF_DESCRIBE, message) if self_describe else message)


def _flatfield(shape: tuple[int, int], channel: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + channel)
    return rng.normal(1.0, 0.02, shape).astype("<f4")


def _pixel_mask(shape: tuple[int, int], channel: int) -> np.ndarray:
    # Bits as DECTRIS/NeXus masks use them: 1 gap, 2 dead, 4 under-, 8 over-responding, 16 noisy.
    rng = np.random.default_rng(2000 + channel)
    mask = np.zeros(shape, "<u4")
    flat = mask.reshape(-1)
    for bit in (2, 4, 8, 16):
        flat[rng.choice(flat.size, size=max(1, flat.size // 20_000), replace=False)] |= bit
    return mask


def _countrate_table(dtype: str) -> np.ndarray:
    # Measured -> corrected counts of a paralysable counter (a plausible curve, not DECTRIS').
    kind = np.dtype(dtype)
    top = min(int(np.iinfo(kind).max) - 1, 2**20) if kind.kind in "ui" else 2**20
    measured = np.arange(4096, dtype=np.float64)
    return np.minimum(measured * (1 + measured / 8192.0), top).astype("<u4")


def start_message(series_id: int = 1, *, channels: Sequence[str] = ("threshold_1",),
                  shape: tuple[int, int] = EIGER2_500K, dtype: str = "<u2",
                  number_of_images: int = 1, header_detail: Literal["basic", "all"] = "basic",
                  user_data: Any = None, self_describe: bool = True, **extra: Any) -> bytes:
    """A start message with every field of the spec's table, in the table's order.

    Parameters
    ----------
    series_id
        The series number.
    channels
        Active channel names.
    shape
        (rows, columns) of the images: ``image_size_y``, ``image_size_x``.
    dtype
        The images' pixel type: sets ``saturation_value`` (the start message has no dtype).
    number_of_images
        Images in the series.
    header_detail
        ``"basic"``, or ``"all"``: adds ``countrate_correction_lookup_table`` (a ``<u4`` typed
        array), ``flatfield`` (per channel ``<f4``) and ``pixel_mask`` (per channel ``<u4``),
        as uncompressed multi-dimensional arrays.
    user_data
        The ``header_appendix``; any CBOR-encodable value.
    self_describe
        Wrap the map in tag 55799.
    **extra
        Fields added at the end, or replacing ones of the same name in place.

    Returns
    -------
    bytes
        The CBOR message.
    """
    rows, columns = shape
    kind = np.dtype(dtype)
    saturation = int(np.iinfo(kind).max - 1) if kind.kind in "ui" else 2**20
    msg: dict[str, Any] = {"type": "start", "arm_date": _arm_date(series_id),
                           "beam_center_x": columns / 2 + 11.5, "beam_center_y": rows / 2 - 7.25,
                           "channels": list(channels), "count_time": COUNT_TICKS / TIME_BASE,
                           "countrate_correction_enabled": True}
    if header_detail == "all":
        msg["countrate_correction_lookup_table"] = typed_array(_countrate_table(dtype))
    msg |= {"detector_description": "Dectris EIGER2 Si 500K",
            "detector_serial_number": "E-01-0001",
            "detector_translation": [0.0, 0.0, 0.125]}
    if header_detail == "all":
        msg["flatfield"] = {c: multidim(_flatfield(shape, i)) for i, c in enumerate(channels)}
    msg |= {"flatfield_enabled": True, "frame_time": FRAME_TICKS / TIME_BASE,
            "goniometer": {axis: {"increment": inc, "start": start} for axis, inc, start in
                           (("chi", 0.0, 0.0), ("kappa", 0.0, 0.0), ("omega", 0.1, -45.0),
                            ("phi", 0.0, 0.0), ("two_theta", 0.0, 0.0))},
            "image_size_x": columns, "image_size_y": rows, "incident_energy": 12398.4,
            "incident_wavelength": 1.0, "number_of_images": number_of_images}
    if header_detail == "all":
        msg["pixel_mask"] = {c: multidim(_pixel_mask(shape, i)) for i, c in enumerate(channels)}
    msg |= {"pixel_mask_enabled": True, "pixel_size_x": 7.5e-05, "pixel_size_y": 7.5e-05,
            "saturation_value": saturation, "sensor_material": "Si",
            "sensor_thickness": 0.00045, "series_id": series_id,
            "series_unique_id": _series_unique_id(series_id),
            # Thresholds: the first at half the incident energy, further ones above it.
            "threshold_energy": {c: 6199.2 + 1000.0 * i for i, c in enumerate(channels)},
            "user_data": user_data, "virtual_pixel_interpolation_enabled": True}
    msg |= extra
    return _encode(msg, self_describe)


def image_message(series_id: int, image_id: int, data: Mapping[str, np.ndarray], *,
                  compression: Compression = "none", self_describe: bool = True,
                  user_data: Any = None, **extra: Any) -> bytes:
    """An image message, fields in the spec's order.

    Parameters
    ----------
    series_id, image_id
        The series and image numbers.
    data
        Channel name -> image; each becomes a tag 40 array (dims, typed array by dtype).
    compression
        How every channel's typed array is sent (see `multidim`).
    self_describe
        Wrap the map in tag 55799.
    user_data
        The ``image_appendix``.
    **extra
        Fields added at the end, or replacing ones of the same name in place.

    Returns
    -------
    bytes
        The CBOR message; times are rationals ``[ticks, TIME_BASE]`` (plain arrays) and
        ``series_date`` the series' arm date (tag 0).
    """
    start = image_id * FRAME_TICKS
    msg: dict[str, Any] = {
        "type": "image",
        "data": {c: multidim(a, compression) for c, a in data.items()},
        "image_id": image_id,
        "real_time": [COUNT_TICKS, TIME_BASE],
        "series_date": _arm_date(series_id),
        "series_id": series_id,
        "series_unique_id": _series_unique_id(series_id),
        "start_time": [start, TIME_BASE],
        "stop_time": [start + COUNT_TICKS, TIME_BASE],
        "user_data": user_data,
    }
    msg |= extra
    return _encode(msg, self_describe)


def end_message(series_id: int, *, self_describe: bool = True, **extra: Any) -> bytes:
    """An end message: ``type``, ``series_id``, ``series_unique_id`` (then ``extra``)."""
    msg: dict[str, Any] = {"type": "end", "series_id": series_id,
                           "series_unique_id": _series_unique_id(series_id)}
    msg |= extra
    return _encode(msg, self_describe)


def images(n: int, shape: tuple[int, int], dtype: str, channels: Sequence[str],
           seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` images of counts as a photon-counting detector sees a weak diffraction pattern.

    A Poisson background of mean 1 falling off from the centre, a few hundred Bragg-like
    spots, two hot pixels per image near the type's top: bslz4 packs a 16-bit EIGER2 500K image
    about 7x (32-bit: 14x), lz4 2.6x (3.8x).  Each further channel (threshold) sees 30 % fewer
    photons.

    Returns
    -------
    list of dict
        Per image, channel -> array of ``shape`` and ``dtype``.
    """
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    top = int(np.iinfo(kind).max) if kind.kind in "ui" else 2**20
    rows, columns = shape
    y, x = np.ogrid[:rows, :columns]
    r2 = ((y - rows / 2) ** 2 + (x - columns / 2) ** 2) / max(rows * columns, 1)
    background = 1.0 * np.exp(-r2 * 2.0)
    out = []
    for _ in range(n):
        image = {}
        for i, channel in enumerate(channels):
            scale = 0.7**i
            counts = rng.poisson(background * scale).astype(np.int64)
            spots = rng.integers(0, rows * columns, 300)
            counts.reshape(-1)[spots] += rng.poisson(40 * scale, spots.size)
            hot = rng.integers(0, rows * columns, 2)
            counts.reshape(-1)[hot] = top - 1 - rng.integers(0, 100, hot.size)
            image[channel] = np.minimum(counts, top).astype(kind)
        out.append(image)
    return out


def series(n_images: int, *, shape: tuple[int, int] = EIGER2_500K, dtype: str = "<u2",
           channels: Sequence[str] = ("threshold_1",), compression: Compression = "none",
           series_id: int = 1, seed: int = 0) -> list[bytes]:
    """A whole series: the start message, ``n_images`` image messages (`images`), the end."""
    start = start_message(series_id, channels=channels, shape=shape, dtype=dtype,
                          number_of_images=n_images)
    frames = images(n_images, shape, dtype, channels, seed)
    return [start,
            *(image_message(series_id, i, data, compression=compression)
              for i, data in enumerate(frames)),
            end_message(series_id)]


class Stream2Detector:
    """A detector's Stream V2 port: a PUSH socket bound on a free loopback port.

    Clients connect a PULL socket to `url`.  Sends wait for a client (as a detector's do), for
    at most ``timeout_s`` each, then raise ``zmq.Again``, so a test without a reader fails
    instead of hanging.
    """

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self.url: str = f"tcp://127.0.0.1:{free_port()}"
        self._socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
        self._socket.setsockopt(zmq.LINGER, 1000)  # queued messages get a second to leave
        self._socket.bind(self.url)

    def send(self, messages: Iterable[bytes]) -> None:
        """Send each message as one single-part ZeroMQ message."""
        for message in messages:
            self._socket.send(message, 0, copy=len(message) < 65536)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._socket.close()

    def __enter__(self) -> Stream2Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Self-check: decode what we built with cbor2 and a tag hook of our own, in the manner of
# DECTRIS' example client (stream_v2/examples/client.py), and compare.

def _hook_typed(tag: int, value: Any) -> np.ndarray:
    f, s, e, ll = tag & 16, tag & 8, tag & 4, tag & 3
    size = (2, 4, 8, 16)[ll] if f else (1, 2, 4, 8)[ll]
    kind = "f" if f else ("i" if s else "u")
    return np.frombuffer(value, np.dtype(f"{'<' if e else '>'}{kind}{size}"))


def _tag_hook(decoder: Any, tag: cbor2.CBORTag) -> Any:
    if tag.tag == _COMPRESSED:
        from dectris.compression import decompress

        algorithm, elem_size, encoded = tag.value
        return decompress(encoded, algorithm, elem_size=elem_size)
    if 64 <= tag.tag <= 87 and tag.tag not in (68, 76):
        return _hook_typed(tag.tag, tag.value)
    if tag.tag in (40, 1040):
        dims, contents = tag.value
        return contents.reshape(dims, order="F" if tag.tag == 1040 else "C")
    return tag


def _self_check() -> None:
    for dtype in ("<u2", "<u4", ">u2", "u1", "<f4", "<i4"):
        for compression in _COMPRESSIONS:
            for column_major in (False, True):
                a = (np.arange(60, dtype=np.int64).reshape(6, 10) * 3 % 251).astype(dtype)
                got = cbor2.loads(cbor2.dumps(multidim(a, compression,
                                                       column_major=column_major)),
                                  tag_hook=_tag_hook)
                assert got.dtype == a.dtype and np.array_equal(got, a), (dtype, compression)
    channels = ("threshold_1", "threshold_2")
    start = cbor2.loads(start_message(7, channels=channels, header_detail="all",
                                      number_of_images=2, user_data={"sample": "x"}, extra=1),
                        tag_hook=_tag_hook)
    assert list(start)[0] == "type" and start["type"] == "start" and start["extra"] == 1
    assert start["arm_date"] == _arm_date(7) and start["channels"] == list(channels)
    assert start["flatfield"]["threshold_2"].shape == EIGER2_500K
    assert start["pixel_mask"]["threshold_1"].dtype == np.dtype("<u4")
    assert start["countrate_correction_lookup_table"].dtype == np.dtype("<u4")
    for dtype in ("<u2", "<u4"):
        frames = images(2, EIGER2_500K, dtype, channels, seed=3)
        for compression in _COMPRESSIONS:
            raw = image_message(7, 1, frames[1], compression=compression)
            msg = cbor2.loads(raw, tag_hook=_tag_hook)
            assert list(msg) == ["type", "data", "image_id", "real_time", "series_date",
                                 "series_id", "series_unique_id", "start_time", "stop_time",
                                 "user_data"]
            assert msg["image_id"] == 1 and msg["series_date"] == _arm_date(7)
            for c in channels:
                assert np.array_equal(msg["data"][c], frames[1][c]), (dtype, compression, c)
            nbytes = sum(a.nbytes for a in frames[1].values())
            print(f"{dtype} {compression:5s}: {len(raw):8d} bytes, {nbytes / len(raw):4.1f}x")
    end = cbor2.loads(end_message(7), tag_hook=_tag_hook)
    assert end == {"type": "end", "series_id": 7, "series_unique_id": _series_unique_id(7)}
    msgs = series(3, shape=(16, 32), compression="bslz4", series_id=2)
    with Stream2Detector() as det:
        pull: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PULL)
        pull.connect(det.url)
        det.send(msgs)
        assert [pull.recv() for _ in msgs] == msgs
        pull.close()
    print("stream2_messages: self-check passed")


if __name__ == "__main__":
    _self_check()
