"""STINS decode cost: ``middlewares.stream1.parse`` against ``json.loads`` + ``np.frombuffer``.

Run: ``python -m pytest bench/bench_stins.py -q --benchmark-only -p no:cacheprovider``.
The bslz4 cases store their throughput in ``extra_info["GB/s"]`` (uncompressed bytes per second
at the median).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pytest
import zmq
from dectris.compression import decompress

from dranspose_fast.data.stream1 import Stream1Data, Stream1Start
from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.middlewares.stream1 import parse


def _image_message(shape: tuple[int, ...], payload: Any, compression: str = "none") -> StreamData:
    header = Stream1Data(
        msg_number=7,
        frame=7,
        shape=list(shape),
        type="uint16",
        compression=compression,
        timestamps={"start": 1.0, "stop": 1.001},
    )
    return make_stream_data("STINS", [header.model_dump_json().encode(), payload])


def _baseline(data: StreamData) -> np.ndarray[Any, Any]:
    header = json.loads(bytes(data.frames[0]))
    payload = data.frames[1]
    buf = payload.buffer if isinstance(payload, zmq.Frame) else payload
    return np.frombuffer(buf, header["type"]).reshape(header["shape"])


@pytest.fixture(scope="module")
def detector_image() -> np.ndarray[Any, Any]:
    # Photon counts like a detector frame: compresses about 5x with bitshuffle-LZ4.
    return np.random.default_rng(3).poisson(2.0, size=(512, 1024)).astype(np.uint16)


@pytest.fixture(scope="module")
def bslz4_chunk(detector_image: np.ndarray[Any, Any]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp, h5py.File(Path(tmp) / "b.h5", "w") as f:
        dset = f.create_dataset(
            "d",
            data=detector_image,
            chunks=detector_image.shape,
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
        return bytes(dset.id.read_direct_chunk((0, 0))[1])


@pytest.mark.benchmark(group="stins-header")
def test_header_only_parse(benchmark: Any) -> None:
    data = Stream1Start(msg_number=1, filename="/data/visitors/scan_0001.h5").to_stream_data()
    assert benchmark(parse, data).filename.endswith(".h5")


@pytest.mark.benchmark(group="stins-header")
def test_header_only_json_baseline(benchmark: Any) -> None:
    data = Stream1Start(msg_number=1, filename="/data/visitors/scan_0001.h5").to_stream_data()
    assert benchmark(json.loads, data.frames[0])["htype"] == "header"


@pytest.mark.benchmark(group="stins-64x64-u16")
def test_small_image_parse(benchmark: Any) -> None:
    data = _image_message((64, 64), np.arange(4096, dtype=np.uint16).tobytes())
    assert benchmark(parse, data).data.shape == (64, 64)


@pytest.mark.benchmark(group="stins-64x64-u16")
def test_small_image_baseline(benchmark: Any) -> None:
    data = _image_message((64, 64), np.arange(4096, dtype=np.uint16).tobytes())
    assert benchmark(_baseline, data).shape == (64, 64)


@pytest.mark.benchmark(group="stins-512x1024-u16-view")
def test_large_image_parse(benchmark: Any, detector_image: np.ndarray[Any, Any]) -> None:
    data = _image_message(detector_image.shape, zmq.Frame(detector_image.tobytes(), copy=False))
    assert benchmark(parse, data).data.shape == detector_image.shape


@pytest.mark.benchmark(group="stins-512x1024-u16-view")
def test_large_image_baseline(benchmark: Any, detector_image: np.ndarray[Any, Any]) -> None:
    data = _image_message(detector_image.shape, zmq.Frame(detector_image.tobytes(), copy=False))
    assert benchmark(_baseline, data).shape == detector_image.shape


def _record_rate(benchmark: Any, nbytes: int) -> None:
    benchmark.extra_info["GB/s"] = round(nbytes / benchmark.stats.stats.median / 1e9, 2)


@pytest.mark.benchmark(group="stins-512x1024-u16-bslz4")
def test_bslz4_parse(
    benchmark: Any, detector_image: np.ndarray[Any, Any], bslz4_chunk: bytes
) -> None:
    data = _image_message(detector_image.shape, bslz4_chunk, "bslz4")
    result = benchmark(parse, data)
    np.testing.assert_array_equal(result.data, detector_image)
    _record_rate(benchmark, detector_image.nbytes)


@pytest.mark.benchmark(group="stins-512x1024-u16-bslz4")
def test_bslz4_decompress_baseline(
    benchmark: Any, detector_image: np.ndarray[Any, Any], bslz4_chunk: bytes
) -> None:
    out = benchmark(decompress, bslz4_chunk, "bslz4", elem_size=2)
    assert len(out) == detector_image.nbytes
    _record_rate(benchmark, detector_image.nbytes)
