"""Regression suite of the data plane's hot kernels, compared against a saved baseline.

Run and compare (what ``tox -e bench`` does)::

    python -m pytest bench/bench_kernels.py -p no:cacheprovider --benchmark-only \
        --benchmark-storage=file://bench/.baseline --benchmark-compare=0001 \
        --benchmark-compare-fail=median:60%

Re-save the baseline after an intended change (a new ``000N_baseline.json``; point
``--benchmark-compare`` at it in tox.ini)::

    python -m pytest bench/bench_kernels.py -p no:cacheprovider --benchmark-only \
        --benchmark-storage=file://bench/.baseline --benchmark-save=baseline

Only stable public kernels are measured, each on a fixed workload:

* ``kernel-route-pack``: ``dataplane.encode_events`` and ``_batch.pack`` on 100 STINS events
  of a JSON header + an 8 KiB image, and on 100 events whose 1 MiB images go as externals;
* ``kernel-unpack-assemble``: ``dataplane.decode_events`` of the same batches, then
  ``_batch.make_event`` per event (the ``EventData`` the user sees);
* ``kernel-results``: ``encode_results`` / ``decode_results`` of 100 small pickled results;
* ``kernel-bind``: ``BindingEngine.bind`` of a uniform map, 10^5 events x 4 streams, 8 workers;
* ``kernel-stins-decode``: ``middlewares.stream1.parse`` of a 64x64 image (bytes) and of a
  512x1024 image that is a view of a ``zmq.Frame``.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pytest
import zmq

from dranspose_fast import _batch
from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.mapping import BindingEngine, MappingSequence
from dranspose_fast.middlewares.stream1 import parse
from dranspose_fast.runtime import dataplane

EVENTS = 100
SMALL = (64, 64)  # 8 KiB of uint16
LARGE = (512, 1024)  # 1 MiB of uint16
BIND_EVENTS = 100_000
BIND_STREAMS = ["s0", "s1", "s2", "s3"]
BIND_WORKERS = 8


def _header(frame: int, shape: tuple[int, int]) -> bytes:
    return json.dumps({
        "htype": "image", "msg_number": frame + 1, "frame": frame, "shape": list(shape),
        "type": "uint16", "compression": "none",
        "timestamps": {"start": 1.0 + frame, "stop": 1.001 + frame},
    }).encode()


def _payload(shape: tuple[int, int]) -> Any:
    data = np.arange(shape[0] * shape[1], dtype=np.uint16).tobytes()
    # As the ingester receives them: small frames as bytes, large ones as zmq.Frame.
    return data if len(data) < dataplane.ZERO_COPY_THRESHOLD else zmq.Frame(data, copy=False)


def _events(shape: tuple[int, int]) -> list[tuple[int, dict[str, StreamData]]]:
    # One payload object shared by every event: packing references externals, never copies them.
    payload = _payload(shape)
    return [(e, {"eiger": make_stream_data("STINS", [_header(e, shape), payload])})
            for e in range(EVENTS)]


def _pack_entries(
    events: list[tuple[int, dict[str, StreamData]]],
) -> list[tuple[int, int, list[Any]]]:
    # What dataplane.encode_events hands to the kernel: buffers, one dense stream id.
    return [(evn, 0, [f.buffer if isinstance(f, zmq.Frame) else f for f in data.frames])
            for evn, streams in events for data in streams.values()]


def _as_received(frames: list[Any]) -> list[Any]:
    """The frames as a worker's ``recv_multipart(copy=False)`` hands them over."""
    return [f if isinstance(f, zmq.Frame) else zmq.Frame(bytes(f)) for f in frames]


def _unpack_assemble(frames: list[Any]) -> list[Any]:
    return [_batch.make_event(evn, streams) for evn, streams in dataplane.decode_events(frames)]


# === route + pack ===


@pytest.mark.benchmark(group="kernel-route-pack")
@pytest.mark.parametrize("shape", [SMALL, LARGE], ids=["8KiB", "1MiB"])
def test_encode_events(benchmark: Any, shape: tuple[int, int]) -> None:
    events = _events(shape)
    frames = benchmark(dataplane.encode_events, events)
    assert len(frames) == 4 + (EVENTS if shape == LARGE else 0)
    benchmark.extra_info["ns_per_event"] = benchmark.stats.stats.median / EVENTS * 1e9


@pytest.mark.benchmark(group="kernel-route-pack")
@pytest.mark.parametrize("shape", [SMALL, LARGE], ids=["8KiB", "1MiB"])
def test_batch_pack(benchmark: Any, shape: tuple[int, int]) -> None:
    entries = _pack_entries(_events(shape))
    index, payload, externals = benchmark(_batch.pack, entries, dataplane.ZERO_COPY_THRESHOLD)
    assert len(externals) == (EVENTS if shape == LARGE else 0)
    assert len(payload) >= (EVENTS * SMALL[0] * SMALL[1] * 2 if shape == SMALL else 0)
    benchmark.extra_info["ns_per_event"] = benchmark.stats.stats.median / EVENTS * 1e9


# === unpack + assemble ===


@pytest.mark.benchmark(group="kernel-unpack-assemble")
@pytest.mark.parametrize("shape", [SMALL, LARGE], ids=["8KiB", "1MiB"])
def test_decode_events(benchmark: Any, shape: tuple[int, int]) -> None:
    frames = _as_received(dataplane.encode_events(_events(shape)))
    out = benchmark(dataplane.decode_events, frames)
    assert [evn for evn, _ in out] == list(range(EVENTS))
    benchmark.extra_info["ns_per_event"] = benchmark.stats.stats.median / EVENTS * 1e9


@pytest.mark.benchmark(group="kernel-unpack-assemble")
@pytest.mark.parametrize("shape", [SMALL, LARGE], ids=["8KiB", "1MiB"])
def test_decode_and_make_event(benchmark: Any, shape: tuple[int, int]) -> None:
    frames = _as_received(dataplane.encode_events(_events(shape)))
    out = benchmark(_unpack_assemble, frames)
    assert out[-1].event_number == EVENTS - 1
    assert len(bytes(out[-1].streams["eiger"].frames[1])) == shape[0] * shape[1] * 2
    benchmark.extra_info["ns_per_event"] = benchmark.stats.stats.median / EVENTS * 1e9


# === results ===


@pytest.mark.benchmark(group="kernel-results")
def test_encode_results(benchmark: Any) -> None:
    results = [(e, pickle.dumps({"event": e, "sum": 1.5 * e})) for e in range(EVENTS)]
    frames = benchmark(dataplane.encode_results, "w0", "hash", results)
    assert len(frames) == 4


@pytest.mark.benchmark(group="kernel-results")
def test_decode_results(benchmark: Any) -> None:
    results = [(e, pickle.dumps({"event": e, "sum": 1.5 * e})) for e in range(EVENTS)]
    frames = _as_received(dataplane.encode_results("w0", "hash", results))
    worker, _, out = benchmark(dataplane.decode_results, frames)
    assert worker == "w0" and len(out) == EVENTS


# === bind ===


@pytest.fixture(scope="module")
def uniform_map() -> MappingSequence:
    return MappingSequence.from_uniform(BIND_STREAMS, BIND_EVENTS)


def _engine(seq: MappingSequence) -> tuple[tuple[BindingEngine], dict[str, Any]]:
    eng = BindingEngine(seq)
    for i in range(BIND_WORKERS):
        eng.add_worker(f"w{i}")
        eng.grant(f"w{i}", 10**9)
    return (eng,), {}


@pytest.mark.benchmark(group="kernel-bind")
def test_bind_uniform(benchmark: Any, uniform_map: MappingSequence) -> None:
    def bind_all(eng: BindingEngine) -> int:
        return eng.bind(BIND_EVENTS + 2).count

    # A fresh engine per round (setup is not timed): binding consumes the map.
    count = benchmark.pedantic(bind_all, setup=lambda: _engine(uniform_map), rounds=30)
    assert count == BIND_EVENTS + 2
    benchmark.extra_info["ns_per_frame"] = (
        benchmark.stats.stats.median / (BIND_EVENTS * len(BIND_STREAMS)) * 1e9)


# === STINS decode ===


@pytest.mark.benchmark(group="kernel-stins-decode")
def test_parse_64x64(benchmark: Any) -> None:
    data = make_stream_data("STINS", [_header(7, SMALL), _payload(SMALL)])
    packet = benchmark(parse, data)
    assert packet.data.shape == SMALL and int(packet.data[0, 5]) == 5


@pytest.mark.benchmark(group="kernel-stins-decode")
def test_parse_512x1024_frame_view(benchmark: Any) -> None:
    data = make_stream_data("STINS", [_header(7, LARGE), _payload(LARGE)])
    assert isinstance(data.frames[1], zmq.Frame)
    packet = benchmark(parse, data)
    assert packet.data.shape == LARGE and int(packet.data[1, 0]) == 1024
