"""Replay throughput, beside same-run baselines.

Groups:
* ``replay-8k``: 64×64 uint16 STINS images (8 KiB frames), trivial worker and reducer;
  baselines: decoding the same file with cbor2 and a 0.2-style tag hook (the least dranspose
  0.2's replay does per record), and, when ``DRANSPOSE02_PYTHON`` is set, dranspose 0.2's
  replay itself (reported in ``extra_info``, measured in a subprocess in the same run).
* ``replay-1m``: 512×1024 uint16 images (1 MiB frames): trivial worker (frames are views of
  the file's pages) and a worker that reads every byte; baseline: ``f.read()`` of the file.

Run: ``python -m pytest bench/bench_replay.py --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import numpy as np
import pytest

from dranspose_fast.data.stream1 import Stream1Data, Stream1End, Stream1Start
from dranspose_fast.dump import write_dump
from dranspose_fast.event import InternalWorkerMessage
from dranspose_fast.replay import replay

N_SMALL = 20_000
N_LARGE = 200
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_dump(path: Path, n: int, shape: tuple[int, int]) -> Path:
    img = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)

    def messages():
        yield InternalWorkerMessage(event_number=0, created_at=T0, streams={
            "det": Stream1Start(msg_number=0, filename="x").to_stream_data()})
        for i in range(1, n + 1):
            yield InternalWorkerMessage(event_number=i, created_at=T0, streams={
                "det": Stream1Data(msg_number=i, frame=i - 1, shape=list(shape), type="uint16",
                                   compression="none", data=img).to_stream_data()})
        yield InternalWorkerMessage(event_number=n + 1, created_at=T0, streams={
            "det": Stream1End(msg_number=n + 1).to_stream_data()})

    write_dump(path, messages())
    return path


@pytest.fixture(scope="module")
def small_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dump(tmp_path_factory.mktemp("r") / "small.cbors", N_SMALL, (64, 64))


@pytest.fixture(scope="module")
def large_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dump(tmp_path_factory.mktemp("r") / "large.cbors", N_LARGE, (512, 1024))


def _replay(path: Path, worker: str = "bench.trivial:TrivialWorker", **kw: object) -> None:
    report = replay(worker, "bench.trivial:TrivialReducer", [path], progress=False, **kw)
    assert report.results == report.deliveries


def _tag_hook(*args: object) -> object:
    tag = args[0] if isinstance(args[0], cbor2.CBORTag) else args[1]
    return tag.value  # type: ignore[union-attr]


def _cbor2_decode(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while True:
            try:
                cbor2.load(fh, tag_hook=_tag_hook)
            except (EOFError, cbor2.CBORDecodeEOF):
                return n
            n += 1


def _dr02(path: Path, repeats: int = 3) -> dict[str, float] | None:
    python = os.environ.get("DRANSPOSE02_PYTHON")
    if not python:
        return None
    out = subprocess.run([python, str(Path(__file__).with_name("dr02_replay.py")), str(path),
                          str(repeats)], capture_output=True, text=True, timeout=900)
    if out.returncode:
        return None
    data = json.loads(out.stdout)
    median = float(np.median(data["seconds"]))
    return {"dr02_events_per_s": data["events"] / median, "dr02_median_s": median}


@pytest.mark.benchmark(group="replay-8k")
def test_replay_8k(benchmark, small_dump: Path) -> None:
    benchmark.pedantic(_replay, args=(small_dump,), rounds=5, warmup_rounds=1)
    benchmark.extra_info["events_per_s"] = (N_SMALL + 2) / benchmark.stats.stats.median
    dr02 = _dr02(small_dump)
    if dr02:
        benchmark.extra_info.update(dr02)
        benchmark.extra_info["speedup_vs_dr02"] = (
            benchmark.extra_info["events_per_s"] / dr02["dr02_events_per_s"])


@pytest.mark.benchmark(group="replay-8k")
def test_replay_8k_processes(benchmark, small_dump: Path) -> None:
    benchmark.pedantic(_replay, args=(small_dump,), kwargs={"processes": True}, rounds=3)
    benchmark.extra_info["events_per_s"] = (N_SMALL + 2) / benchmark.stats.stats.median


@pytest.mark.benchmark(group="replay-8k")
def test_baseline_cbor2_decode_8k(benchmark, small_dump: Path) -> None:
    n = benchmark.pedantic(_cbor2_decode, args=(small_dump,), rounds=5)
    assert n == N_SMALL + 2
    benchmark.extra_info["events_per_s"] = n / benchmark.stats.stats.median


@pytest.mark.benchmark(group="replay-1m")
def test_replay_1m_views(benchmark, large_dump: Path) -> None:
    benchmark.pedantic(_replay, args=(large_dump,), rounds=5, warmup_rounds=1)
    benchmark.extra_info["GB_per_s"] = N_LARGE * 2**20 / benchmark.stats.stats.median / 1e9
    dr02 = _dr02(large_dump)
    if dr02:
        benchmark.extra_info.update(dr02)
        benchmark.extra_info["dr02_GB_per_s"] = dr02["dr02_events_per_s"] * 2**20 / 1e9


@pytest.mark.benchmark(group="replay-1m")
def test_replay_1m_reading_every_byte(benchmark, large_dump: Path) -> None:
    benchmark.pedantic(_replay, args=(large_dump, "bench.trivial:TouchWorker"), rounds=3)
    benchmark.extra_info["GB_per_s"] = N_LARGE * 2**20 / benchmark.stats.stats.median / 1e9


@pytest.mark.benchmark(group="replay-1m")
def test_baseline_read_file_1m(benchmark, large_dump: Path) -> None:
    def read() -> int:
        return len(large_dump.read_bytes())

    size = benchmark.pedantic(read, rounds=5)
    benchmark.extra_info["GB_per_s"] = size / benchmark.stats.stats.median / 1e9


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "--benchmark-only", "-p", "no:cacheprovider"]))
