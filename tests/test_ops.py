"""Tests of dranspose_fast.ops: kernels against plain numpy, merging, validation, disk cache."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast.errors import DransposeFastError
from dranspose_fast.ops import (
    BinnedMap,
    GrowingBuffer,
    OpsError,
    RunningStats,
    RunningSum,
)

FRAME_DTYPES = [np.uint8, np.uint16, np.uint32, np.int32, np.float32, np.float64]
SETTINGS = settings(deadline=None, max_examples=40)


def _frames(rng: np.random.Generator, dtype: Any, n: int, shape: tuple[int, ...]) -> Any:
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal((n, *shape)) * 100).astype(dtype)
    hi = min(np.iinfo(dtype).max, 60000)
    return rng.integers(0, hi, size=(n, *shape)).astype(dtype)


def _readonly(arr: Any) -> Any:
    """The same data as a received ZeroMQ frame would be: a read-only np.frombuffer view."""
    return np.frombuffer(arr.tobytes(), dtype=arr.dtype).reshape(arr.shape)


def _run(code: str, env: dict[str, str]) -> Any:
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


# === Import and disk cache ===


def test_numba_imported_only_with_ops() -> None:
    code = (
        "import json, sys\n"
        "import dranspose_fast, dranspose_fast.event, dranspose_fast.errors\n"
        "before = 'numba' in sys.modules\n"
        "import dranspose_fast.ops\n"
        "print(json.dumps([before, 'numba' in sys.modules]))\n"
    )
    assert _run(code, dict(os.environ)) == [False, True]


def test_disk_cache_is_loaded_by_second_process(tmp_path: Path) -> None:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = (
        "import json, numpy as np\n"
        "from dranspose_fast import ops\n"
        "ops.warmup([np.uint16], readonly=False)\n"
        "acc = ops.RunningSum()\n"
        "acc.add(np.ones((4, 4), np.uint16))\n"
        "print(json.dumps({'dir': ops.cache_dir(), 'stats': ops.cache_stats(),"
        " 'sum': float(acc.sum.sum())}))\n"
    )
    first = _run(code, env)
    assert Path(first["dir"]).is_relative_to(tmp_path)
    assert list(Path(first["dir"]).glob("*.nbi")), "run 1 wrote no cache index"
    assert all(misses > 0 and hits == 0 for hits, misses in first["stats"].values())
    second = _run(code, env)
    assert second["dir"] == first["dir"]
    assert all(hits > 0 and misses == 0 for hits, misses in second["stats"].values())
    assert second["sum"] == first["sum"] == 16.0


def test_warmup_covers_what_the_classes_call() -> None:
    # In a fresh process, so specializations compiled by other tests cannot hide a gap.
    code = """
import json, numpy as np
from dranspose_fast import ops
from dranspose_fast.ops import _kernels as K
ops.warmup([np.uint16, np.float32])
before = {name: len(k.signatures) for name, k in K.KERNELS.items()}
for dtype in (np.uint16, np.float32):
    frames = np.arange(60).astype(dtype).reshape(3, 4, 5)
    for data in (frames, np.frombuffer(frames.tobytes(), dtype).reshape(3, 4, 5)):
        ops.RunningSum().add(data[0]), ops.RunningSum().add_many(data)
        ops.RunningStats().add(data[0]), ops.RunningStats().add_many(data)
        ops.GrowingBuffer((4, 5), dtype).put_many([2, 0, 1], data)
    stats = ops.RunningStats()
    stats.add_many(frames), stats.merge(stats)
ops.BinnedMap(bins=4, range=(0, 1)).add(np.frombuffer(np.ones(2).tobytes()), [1, 2])
print(json.dumps([before, {name: len(k.signatures) for name, k in K.KERNELS.items()}]))
"""
    before, after = _run(code, dict(os.environ))
    assert after == before and all(before.values())


def test_ops_error_is_a_value_error() -> None:
    assert issubclass(OpsError, ValueError) and issubclass(OpsError, DransposeFastError)


# === RunningSum ===


@SETTINGS
@given(
    dtype=st.sampled_from(FRAME_DTYPES),
    shape=st.sampled_from([(), (7,), (3, 5), (2, 3, 4), (0, 4)]),
    n=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_running_sum_matches_numpy(dtype: Any, shape: Any, n: int, seed: int) -> None:
    frames = _frames(np.random.default_rng(seed), dtype, n, shape)
    one, many = RunningSum(), RunningSum(shape)
    for f in frames:
        one.add(f)
    many.add_many(frames)
    want = frames.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(one.sum, want, rtol=1e-12)
    np.testing.assert_allclose(many.sum, want, rtol=1e-12)
    np.testing.assert_allclose(many.mean, want / n, rtol=1e-12)
    assert one.count == many.count == n and many.sum.shape == shape


def test_running_sum_merge_equals_whole_stream() -> None:
    frames = _frames(np.random.default_rng(1), np.uint16, 20, (16, 8))
    whole = RunningSum()
    whole.add_many(frames)
    parts = [RunningSum() for _ in range(3)]
    for i, f in enumerate(frames):
        parts[i % 3].add(f)
    total = RunningSum()
    for p in parts:
        total.merge(p)
    total.merge(RunningSum())  # an idle worker contributes nothing
    np.testing.assert_array_equal(total.sum, whole.sum)
    assert total.count == 20


def test_running_sum_chosen_dtype_and_layouts() -> None:
    frames = np.random.default_rng(2).integers(0, 65535, (5, 6, 4)).astype(np.uint16)
    exact = RunningSum(dtype=np.int64)
    exact.add_many(frames)
    assert exact.sum.dtype == np.int64
    np.testing.assert_array_equal(exact.sum, frames.astype(np.int64).sum(axis=0))
    strided = RunningSum()
    for f in frames:
        strided.add(f.T)  # non-contiguous
    np.testing.assert_array_equal(strided.sum, frames.sum(axis=0).T)
    swapped = RunningSum()
    swapped.add_many(frames.astype(">u2"))  # big-endian, as read from some files
    np.testing.assert_array_equal(swapped.sum, exact.sum)
    small = RunningSum(dtype=np.float32)
    small.add(np.ones(3, np.bool_))
    assert small.sum.dtype == np.float32 and small.sum.tolist() == [1.0, 1.0, 1.0]


def test_running_sum_pickle_empty_and_reset() -> None:
    a = RunningSum()
    a.add(np.arange(4.0))
    b = pickle.loads(pickle.dumps(a))
    b.add(np.ones(4))
    a.merge(b)
    assert a.sum.tolist() == [1.0, 3.0, 5.0, 7.0] and a.count == 3
    a.reset()
    assert a.count == 0 and a.sum.tolist() == [0.0] * 4
    assert np.isnan(RunningSum(shape=(2, 2)).mean).all()


@pytest.mark.parametrize(
    ("make", "call", "match"),
    [
        (lambda: RunningSum(dtype=np.int64), lambda a: a.add(np.ones(3)), "frame: cannot store"),
        (lambda: RunningSum(3), lambda a: a.add(np.ones(4)), r"frame: frame shape \(4,\)"),
        (lambda: RunningSum(), lambda a: a.add(np.ones(2, complex)), "frame: dtype complex"),
        (lambda: RunningSum(), lambda a: a.add(["a", "b"]), "frame: dtype <U1"),
        (lambda: RunningSum(), lambda a: a.add_many(3.0), "stack: expected an array"),
        (lambda: RunningSum(), lambda a: a.sum, "has no shape yet"),
        (lambda: RunningSum(2), lambda a: a.merge(RunningSum(3)), r"other: shape \(3,\)"),
        (lambda: RunningSum(2), lambda a: a.merge(RunningStats(2)), "other: expected a Runn"),
        (
            lambda: RunningSum(2, dtype=np.int32),
            lambda a: a.merge(RunningSum(2)),
            "other: cannot store float64",
        ),
        (lambda: RunningStats(2), lambda a: a.variance(-1), "ddof: must be >= 0"),
        (lambda: RunningStats(2), lambda a: a.merge(RunningSum(2)), "other: expected a Runn"),
    ],
)
def test_accumulator_errors(make: Any, call: Any, match: str) -> None:
    acc = make()
    shape = acc.shape
    with pytest.raises(OpsError, match=match):
        call(acc)
    assert acc.count == 0 and acc.shape == shape  # a rejected input changes nothing


# === RunningStats ===


@SETTINGS
@given(
    dtype=st.sampled_from(FRAME_DTYPES),
    n=st.integers(1, 9),
    cut=st.integers(0, 9),
    offset=st.sampled_from([0.0, 1e6]),
    seed=st.integers(0, 2**32 - 1),
)
def test_running_stats_match_numpy(dtype: Any, n: int, cut: int, offset: float, seed: int) -> None:
    frames = _frames(np.random.default_rng(seed), dtype, n, (4, 6))
    if np.dtype(dtype).kind == "f":
        frames = (frames + offset).astype(dtype)  # a large offset tests numerical stability
    ref = frames.astype(np.float64)
    a, b, whole = RunningStats(), RunningStats(), RunningStats()
    for f in frames[:cut]:
        a.add(f)
    b.add_many(frames[cut:])
    whole.add_many(frames)
    a.merge(b)
    big = max(1.0, float(np.abs(ref).max()))  # absolute tolerances scale with the data
    for s in (a, whole):
        assert s.count == n
        np.testing.assert_allclose(s.mean, ref.mean(axis=0), rtol=1e-12, atol=1e-13 * big)
        np.testing.assert_allclose(s.sum, ref.sum(axis=0), rtol=1e-12, atol=1e-13 * big * n)
        np.testing.assert_allclose(s.variance(), ref.var(axis=0), rtol=1e-7, atol=1e-12 * big**2)
        if n > 1:
            np.testing.assert_allclose(s.std(1), ref.std(axis=0, ddof=1), rtol=1e-7, atol=1e-6)
        np.testing.assert_array_equal(s.min, ref.min(axis=0))
        np.testing.assert_array_equal(s.max, ref.max(axis=0))


def test_running_stats_nan_stays_in_its_pixel() -> None:
    frames = np.arange(12.0).reshape(3, 4)
    frames[1, 2] = np.nan
    s = RunningStats()
    s.add_many(frames)
    other = RunningStats()
    other.add(np.ones(4))
    s.merge(other)
    ref = np.vstack([frames, np.ones(4)])
    for got, want in [(s.mean, ref.mean(0)), (s.min, ref.min(0)), (s.max, ref.max(0))]:
        np.testing.assert_allclose(got, want)  # NaN positions must agree too
    assert np.isnan(s.variance()[2]) and not np.isnan(s.variance()[[0, 1, 3]]).any()


def test_running_stats_empty_reset_and_ddof() -> None:
    s = RunningStats((2, 3))
    for arr in (s.mean, s.min, s.max, s.variance(), s.sum):
        assert arr.shape == (2, 3) and np.isnan(arr).all()
    s.add(np.ones((2, 3)))
    assert np.isnan(s.variance(ddof=1)).all() and (s.variance() == 0).all()
    s.reset()
    assert s.count == 0 and np.isnan(s.mean).all()
    fresh = RunningStats()
    fresh.merge(RunningStats())
    assert fresh.shape is None


# === BinnedMap ===


def _edges_strategy(draw: Any, nbins: int, uniform: bool) -> Any:
    if uniform:
        lo = draw(st.floats(-10, 10))
        return np.linspace(lo, lo + draw(st.floats(0.5, 20)), nbins + 1)
    pts = draw(st.lists(st.floats(-10, 10), min_size=nbins + 1, max_size=nbins + 1, unique=True))
    return np.sort(np.array(pts))


@SETTINGS
@given(data=st.data(), ndim=st.integers(1, 3), vshape=st.sampled_from([(), (3,)]))
def test_binned_map_matches_histogramdd(data: Any, ndim: int, vshape: Any) -> None:
    uniform = data.draw(st.booleans())
    nbins = [data.draw(st.integers(1, 6)) for _ in range(ndim)]
    edges = [_edges_strategy(data.draw, n, uniform) for n in nbins]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(0, 60))
    pos = rng.uniform(-12, 12, (n, ndim))
    for k in range(min(n, 4)):  # exact edge values, the right-most one included
        pos[k] = [e[[0, -1, 1, -2][k] % len(e)] for e in edges]
    vals = rng.standard_normal((n, *vshape))
    if uniform and data.draw(st.booleans()):
        m = BinnedMap(bins=nbins, range=[(e[0], e[-1]) for e in edges], value_shape=vshape)
    else:
        m = BinnedMap(edges, value_shape=vshape)
    cut = data.draw(st.integers(0, n))
    out = m.add(pos[:cut], vals[:cut]) + m.add(pos[cut:], vals[cut:])
    want_count, _ = np.histogramdd(pos, bins=m.edges)
    np.testing.assert_array_equal(m.count, want_count)
    flat = vals.reshape(n, int(np.prod(vshape)))
    want_sum = np.stack(
        [np.histogramdd(pos, bins=m.edges, weights=flat[:, v])[0] for v in range(flat.shape[1])],
        axis=-1,
    ).reshape(m.sum.shape)
    np.testing.assert_allclose(m.sum, want_sum, rtol=1e-12, atol=1e-12)
    lo = np.array([e[0] for e in m.edges])
    hi = np.array([e[-1] for e in m.edges])
    outside = ((pos < lo) | (pos > hi)).any(axis=1)
    assert out == m.out_of_range == int(outside.sum())
    np.testing.assert_array_equal(m.outside[:, 0], (pos < lo).sum(axis=0))
    np.testing.assert_array_equal(m.outside[:, 1], (pos > hi).sum(axis=0))
    assert m.n_events == n


def test_binned_map_single_events_equal_batch_and_mean() -> None:
    rng = np.random.default_rng(3)
    pos = rng.uniform(0, 1, (50, 2))
    vals = rng.standard_normal((50, 4))
    batch = BinnedMap(bins=(3, 2), range=((0, 1), (0, 1)), value_shape=4)
    single = BinnedMap(bins=(3, 2), range=((0, 1), (0, 1)), value_shape=(4,))
    batch.add(pos, vals)
    for p, v in zip(pos, vals, strict=True):
        assert single.add(p, v) == 0
    np.testing.assert_allclose(single.sum, batch.sum, rtol=1e-12)
    np.testing.assert_array_equal(single.count, batch.count)
    empty = BinnedMap([0.0, 1.0, 2.0, 3.0])
    empty.add([0.5, 0.7, 2.5], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(empty.mean, [1.5, np.nan, 3.0])
    np.testing.assert_allclose(empty.centers[0], [0.5, 1.5, 2.5])


def test_binned_map_merge_equals_whole() -> None:
    rng = np.random.default_rng(4)
    pos, vals = rng.uniform(-0.2, 1.2, 300), rng.standard_normal(300)
    whole = BinnedMap(bins=7, range=(0, 1))
    whole.add(pos, vals)
    parts = [BinnedMap(bins=7, range=(0, 1)) for _ in range(3)]
    for k, part in enumerate(parts):
        part.add(pos[k::3], vals[k::3])
    total = BinnedMap(bins=7, range=(0, 1))
    for part in parts:
        total.merge(part)
    np.testing.assert_allclose(total.sum, whole.sum, rtol=1e-12)
    np.testing.assert_array_equal(total.count, whole.count)
    np.testing.assert_array_equal(total.outside, whole.outside)
    assert total.out_of_range == whole.out_of_range > 0
    total.reset()
    assert total.n_events == 0 and total.sum.sum() == 0


def test_binned_map_nan_position_adds_nothing() -> None:
    m = BinnedMap(bins=(2, 2), range=((0, 1), (0, 1)))
    m.add([0.5, 0.5], 1.0)
    with pytest.raises(OpsError, match="positions: NaN at event 2 of this call, axis 1"):
        m.add([[0.1, 0.1], [0.2, 0.2], [0.3, np.nan]], [1.0, 1.0, 1.0])
    assert m.n_events == 1 and m.sum.sum() == 1.0


EDGES_1D = [0.0, 1.0]
EDGES_2D = [[0.0, 1.0], [0.0, 0.5, 1.0]]


@pytest.mark.parametrize(
    ("edges", "pos", "vals", "match"),
    [
        (EDGES_1D, [0.5], [1.0, 2.0], r"values: expected shape \(1, 2\)"),
        (EDGES_1D, [[0.5, 0.5]], [[1.0, 2.0]], r"positions: expected a scalar or \(n,\)"),
        (EDGES_2D, [[0.5, 0.5, 0.5]], [[1.0, 2.0]], r"positions: expected \(2,\) or \(n, 2\)"),
        (EDGES_2D, [0.1, 0.2, 0.3], [1.0, 2.0], r"positions: expected \(2,\) or \(n, 2\)"),
        (EDGES_2D, [0.5, 0.5], [1.0], r"values: expected shape \(2,\)"),
        (EDGES_2D, [0.5, 0.5], [1j, 2j], "values: dtype complex"),
        (EDGES_2D, ["a", "b"], [1.0, 2.0], "positions: dtype <U1"),
    ],
)
def test_binned_map_add_errors(edges: Any, pos: Any, vals: Any, match: str) -> None:
    m = BinnedMap(edges, value_shape=2)
    with pytest.raises(OpsError, match=match):
        m.add(pos, vals)
    assert m.n_events == 0


def test_binned_map_merge_errors() -> None:
    m = BinnedMap(bins=2, range=(0, 1))
    for other, match in [
        (BinnedMap(bins=3, range=(0, 1)), "other: edges of axis 0 differ"),
        (BinnedMap(bins=2, range=(0, 1), value_shape=2), "other: value_shape"),
        (BinnedMap(bins=2, range=((0, 1), (0, 1))), "other: 2-D map cannot merge into 1-D"),
        (RunningSum(), "other: expected a BinnedMap"),
    ]:
        with pytest.raises(OpsError, match=match):
            m.merge(other)  # type: ignore[arg-type]


# === GrowingBuffer ===


@SETTINGS
@given(
    puts=st.lists(st.tuples(st.integers(0, 300), st.floats(-1e6, 1e6)), max_size=80),
    batched=st.booleans(),
    capacity=st.integers(1, 8),
)
def test_growing_buffer_matches_dict(puts: list[Any], batched: bool, capacity: int) -> None:
    buf = GrowingBuffer(capacity=capacity)
    if batched:
        idx = np.array([i for i, _ in puts], dtype=np.int64)
        buf.put_many(idx, np.array([v for _, v in puts], dtype=np.float64))
    else:
        for i, v in puts:
            buf.put(i, v)
    ref: dict[int, float] = {}
    for i, v in puts:
        ref[i] = v
    length = max(ref, default=-1) + 1
    want = np.full(length, np.nan)
    want[list(ref)] = list(ref.values())
    np.testing.assert_array_equal(buf.array, want)
    np.testing.assert_array_equal(buf.valid, [i in ref for i in range(length)])
    assert len(buf) == length and buf.n_filled == len(ref)
    assert buf.duplicates == len(puts) - len(ref)
    assert buf.indices.tolist() == sorted(ref)
    prefix = next((i for i in range(length) if i not in ref), length)
    assert buf.contiguous_length == prefix


def test_growing_buffer_grows_geometrically() -> None:
    buf = GrowingBuffer(capacity=1)
    caps = set()
    for i in range(1000):
        buf.put(i, float(i))
        assert i + 1 <= buf.capacity < 2 * (i + 1)
        caps.add(buf.capacity)
    assert len(caps) == 11  # 1, 2, 4, ... 1024: one reallocation per doubling
    np.testing.assert_array_equal(buf.array, np.arange(1000.0))


def test_growing_buffer_fixed_shape_rows_and_dtypes() -> None:
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 1000, (6, 2, 3)).astype(np.uint16)
    buf = GrowingBuffer((2, 3), np.int32, start=1, capacity=2)
    buf.put(4, rows[0])
    buf.put_many(_readonly(np.array([2, 4, 1])), _readonly(rows[1:4]))
    buf.put_many(np.array([], dtype=np.int64), np.zeros((0, 2, 3), np.uint8))
    assert buf.array.dtype == np.int32 and buf.array.shape == (4, 2, 3)
    np.testing.assert_array_equal(buf.array[[0, 1, 3]], rows[[3, 1, 2]])
    assert (buf.array[2] == 0).all() and buf.valid.tolist() == [True, True, False, True]
    assert buf.duplicates == 1 and buf.indices.tolist() == [1, 2, 4]
    last = GrowingBuffer(2, fill_value=-1.0)
    last.put_many([3, 3, 3], [[1, 1], [2, 2], [3, 3]])  # duplicates inside one batch
    assert last.array.tolist() == [[-1, -1]] * 3 + [[3, 3]] and last.duplicates == 2
    flags = GrowingBuffer(dtype=np.bool_)
    flags.put_many([1], [True])
    assert flags.array.tolist() == [False, True]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda b: b.put(0, [1, 2]), "index: 0 is below start=1"),
        (lambda b: b.put(1.5, [1, 2]), "index: expected an integer"),
        (lambda b: b.put(1, [1, 2, 3]), r"row: expected shape \(2,\), got \(3,\)"),
        (lambda b: b.put(1, [1.5, 2.5]), "row: cannot store float64 data in a int16"),
        (lambda b: b.put(100, [1, 2]), "index: index 100 is beyond max_length=50"),
        (lambda b: b.put_many([[1]], [[1, 2]]), "indices: expected a 1-D integer array"),
        (lambda b: b.put_many([1.0], [[1, 2]]), "indices: expected a 1-D integer array"),
        (lambda b: b.put_many([1, 0], [[1, 2], [3, 4]]), "indices: 0 is below start=1"),
        (lambda b: b.put_many([1, 2], [[1, 2]]), r"rows: expected shape \(2, 2\)"),
        (lambda b: b.put_many([1, 60], [[1, 2], [1, 2]]), "indices: index 60 is beyond"),
    ],
)
def test_growing_buffer_errors_store_nothing(call: Any, match: str) -> None:
    buf = GrowingBuffer(2, np.int16, start=1, max_length=50)
    with pytest.raises(OpsError, match=match):
        call(buf)
    assert len(buf) == 0 and buf.n_filled == 0 and not buf.valid.any()


def test_growing_buffer_scalar_fast_path_still_validates() -> None:
    ints = GrowingBuffer(dtype=np.int16)
    with pytest.raises(OpsError, match="row: cannot store float64 data in a int16"):
        ints.put(0, 1.5)
    floats = GrowingBuffer()
    with pytest.raises(OpsError, match="row: dtype complex128"):
        floats.put(0, 1j)
    floats.put(np.int64(0), np.float32(2.5))
    floats.put(1, True)
    assert floats.array.tolist() == [2.5, 1.0] and len(ints) == 0


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (RunningSum, {"dtype": "U4"}, "dtype: dtype <U4"),
        (RunningSum, {"dtype": "nope"}, "dtype: 'nope' is not"),
        (RunningSum, {"shape": (2, -1)}, "shape: .* negative"),
        (RunningSum, {"shape": "x"}, "shape: 'x' is not"),
        (
            BinnedMap,
            {"edges": [0.0, 2.0, 1.0]},
            r"edges\[0\]: edges must increase strictly; edge 2",
        ),
        (BinnedMap, {"edges": [[0, 1], [0.0, 0.0]]}, r"edges\[1\]: edges must increase strictly"),
        (BinnedMap, {"edges": [0.0, np.nan]}, r"edges\[0\]: edges must be finite"),
        (BinnedMap, {"edges": [1.0]}, r"edges\[0\]: need a 1-D array of at least 2"),
        (BinnedMap, {"edges": []}, "edges: expected a 1-D array"),
        (BinnedMap, {"edges": [0, 1], "bins": 3}, "edges: give either"),
        (BinnedMap, {"bins": 3}, "edges: give explicit edges, or both"),
        (BinnedMap, {"bins": 3, "range": (0, 1, 2)}, r"range: expected \(lo, hi\)"),
        (BinnedMap, {"bins": 3, "range": (1, 1)}, r"range\[0\]: need finite lo < hi"),
        (BinnedMap, {"bins": (3, 2), "range": (0, 1)}, "bins: 2 bin counts for 1 axes"),
        (BinnedMap, {"bins": 0, "range": (0, 1)}, r"bins\[0\]: need at least one bin"),
        (BinnedMap, {"bins": 2, "range": (0, 1), "value_shape": -1}, "value_shape: .* negative"),
        (GrowingBuffer, {"capacity": 0}, "capacity: must be >= 1"),
        (GrowingBuffer, {"max_length": 0}, "max_length: must be >= 1"),
        (GrowingBuffer, {"dtype": np.int8, "fill_value": np.nan}, "fill_value: nan does not fit"),
        (GrowingBuffer, {"fill_value": [1.0, 2.0]}, "fill_value: expected a scalar"),
        (GrowingBuffer, {"dtype": object}, "dtype: dtype object is not supported"),
    ],
)
def test_constructor_errors(cls: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(OpsError, match=match):
        cls(**kwargs)
