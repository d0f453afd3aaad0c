"""Benchmarks of dranspose_fast.ops against the plain-numpy code a reducer would otherwise run.

Run: ``python -m pytest bench/bench_ops.py -q --benchmark-only -p no:cacheprovider``.
Kernels are warmed (compiled or loaded from the disk cache) before timing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dranspose_fast import ops
from dranspose_fast.ops import BinnedMap, GrowingBuffer, RunningStats, RunningSum

SHAPE = (512, 1024)
N_EVENTS = 10_000


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    ops.warmup([np.uint16, np.float64])


@pytest.fixture(scope="module")
def frame() -> Any:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4096, SHAPE, dtype=np.uint16)
    # Read-only, as a frame decoded from a received ZeroMQ buffer is.
    return np.frombuffer(data.tobytes(), dtype=np.uint16).reshape(SHAPE)


# === Running sums of 512x1024 uint16 frames ===


@pytest.mark.benchmark(group="running-sum-512x1024-u16")
def test_running_sum_add(benchmark: Any, frame: Any) -> None:
    acc = RunningSum()
    benchmark(acc.add, frame)


@pytest.mark.benchmark(group="running-sum-512x1024-u16")
def test_numpy_astype_add(benchmark: Any, frame: Any) -> None:
    acc = np.zeros(SHAPE)

    def step() -> None:
        nonlocal acc
        acc += frame.astype(np.float64)

    benchmark(step)


@pytest.mark.benchmark(group="running-sum-512x1024-u16")
def test_numpy_add_out(benchmark: Any, frame: Any) -> None:
    acc = np.zeros(SHAPE)
    benchmark(np.add, acc, frame, out=acc)


@pytest.mark.benchmark(group="running-sum-512x1024-u16")
def test_running_sum_add_many_8(benchmark: Any, frame: Any) -> None:
    acc = RunningSum()
    stack = np.stack([frame] * 8)
    benchmark(acc.add_many, stack)


@pytest.mark.benchmark(group="running-sum-512x1024-u16")
def test_running_stats_add(benchmark: Any, frame: Any) -> None:
    st = RunningStats()
    benchmark(st.add, frame)


# === Binned map, one event per call: 2-D positions, 4 ROI sums per event ===


@pytest.fixture(scope="module")
def events() -> tuple[Any, Any]:
    rng = np.random.default_rng(1)
    return rng.uniform(-0.05, 1.05, (N_EVENTS, 2)), rng.standard_normal((N_EVENTS, 4))


@pytest.mark.benchmark(group="binned-map-per-event")
def test_binned_map_add_event(benchmark: Any, events: tuple[Any, Any]) -> None:
    pos, vals = events
    m = BinnedMap(bins=(100, 80), range=((0, 1), (0, 1)), value_shape=4)
    rows = iter(range(10**9))

    def step() -> None:
        i = next(rows) % N_EVENTS
        m.add(pos[i], vals[i])

    benchmark(step)


@pytest.mark.benchmark(group="binned-map-per-event")
def test_numpy_histogram2d_event(benchmark: Any, events: tuple[Any, Any]) -> None:
    pos, vals = events
    sums = np.zeros((100, 80, 4))
    counts = np.zeros((100, 80))
    edges = (np.linspace(0, 1, 101), np.linspace(0, 1, 81))
    rows = iter(range(10**9))

    def step() -> None:
        i = next(rows) % N_EVENTS
        x, y = pos[i : i + 1, 0], pos[i : i + 1, 1]
        counts[:] += np.histogram2d(x, y, bins=edges)[0]
        for v in range(4):
            sums[..., v] += np.histogram2d(x, y, bins=edges, weights=vals[i : i + 1, v])[0]

    benchmark(step)


@pytest.mark.benchmark(group="binned-map-per-event")
def test_numpy_searchsorted_event(benchmark: Any, events: tuple[Any, Any]) -> None:
    """The leanest per-event numpy code: find both bins, check the range, add in place."""
    pos, vals = events
    sums = np.zeros((100, 80, 4))
    counts = np.zeros((100, 80), dtype=np.int64)
    ex, ey = np.linspace(0, 1, 101), np.linspace(0, 1, 81)
    rows = iter(range(10**9))
    outside = 0

    def step() -> None:
        nonlocal outside
        i = next(rows) % N_EVENTS
        x, y = pos[i]
        if not (ex[0] <= x <= ex[-1] and ey[0] <= y <= ey[-1]):
            outside += 1
            return
        ix = min(int(np.searchsorted(ex, x, side="right")) - 1, 99)
        iy = min(int(np.searchsorted(ey, y, side="right")) - 1, 79)
        counts[ix, iy] += 1
        sums[ix, iy] += vals[i]

    benchmark(step)


@pytest.mark.benchmark(group="binned-map-batch-10k")
def test_binned_map_add_batch(benchmark: Any, events: tuple[Any, Any]) -> None:
    pos, vals = events
    m = BinnedMap(bins=(100, 80), range=((0, 1), (0, 1)), value_shape=4)
    benchmark(m.add, pos, vals)


@pytest.mark.benchmark(group="binned-map-batch-10k")
def test_numpy_histogram2d_batch(benchmark: Any, events: tuple[Any, Any]) -> None:
    pos, vals = events
    edges = (np.linspace(0, 1, 101), np.linspace(0, 1, 81))

    def step() -> None:
        np.histogram2d(pos[:, 0], pos[:, 1], bins=edges)
        for v in range(4):
            np.histogram2d(pos[:, 0], pos[:, 1], bins=edges, weights=vals[:, v])

    benchmark(step)


# === Out-of-order rows: 10k scalar results, put one by one, then read as an array ===


@pytest.fixture(scope="module")
def order() -> list[int]:
    return [int(i) for i in np.random.default_rng(2).permutation(N_EVENTS)]


@pytest.mark.benchmark(group="growing-buffer-10k-puts")
def test_growing_buffer_put(benchmark: Any, order: list[int]) -> None:
    def run() -> Any:
        buf = GrowingBuffer(capacity=16)
        for i in order:
            buf.put(i, 0.5)
        return buf.array

    benchmark(run)


@pytest.mark.benchmark(group="growing-buffer-10k-puts")
def test_dict_then_array(benchmark: Any, order: list[int]) -> None:
    def run() -> Any:
        d: dict[int, float] = {}
        for i in order:
            d[i] = 0.5
        out = np.full(max(d) + 1, np.nan)
        keys = np.fromiter(d.keys(), dtype=np.int64, count=len(d))
        out[keys] = np.fromiter(d.values(), dtype=np.float64, count=len(d))
        return out

    benchmark(run)


@pytest.mark.benchmark(group="growing-buffer-10k-puts")
def test_list_grow_then_array(benchmark: Any, order: list[int]) -> None:
    def run() -> Any:
        rows: list[float] = []
        for i in order:
            if i >= len(rows):
                rows.extend([np.nan] * (i + 1 - len(rows)))
            rows[i] = 0.5
        return np.array(rows)

    benchmark(run)


@pytest.mark.benchmark(group="growing-buffer-10k-puts")
def test_growing_buffer_put_many_100(benchmark: Any, order: list[int]) -> None:
    idx = np.array(order, dtype=np.int64).reshape(-1, 100)
    vals = np.full(100, 0.5)

    def run() -> Any:
        buf = GrowingBuffer(capacity=16)
        for chunk in idx:
            buf.put_many(chunk, vals)
        return buf.array

    benchmark(run)
