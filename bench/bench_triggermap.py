"""Trigger map: compile times and binding throughput (design budget: a few ns per frame).

Run: ``python -m pytest bench/bench_triggermap.py -q --benchmark-only -p no:cacheprovider``.
``extra_info`` holds ns per constraint / per frame computed from the median.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dranspose_fast._binding import Engine
from dranspose_fast.mapping import DEFAULT_HORIZON, BindingEngine, MappingSequence

N = 100_000
STREAMS = ["s0", "s1", "s2", "s3"]


def vw(c: int) -> dict[str, Any]:
    return {"tags": ["generic"], "constraint": c}


@pytest.mark.benchmark(group="triggermap-compile")
def test_compile_uniform_arrays(benchmark: Any) -> None:
    seq = benchmark(MappingSequence.from_uniform, STREAMS, N)
    assert len(seq) == N + 2


@pytest.mark.benchmark(group="triggermap-compile")
def test_compile_uniform_json(benchmark: Any) -> None:
    body = {s: [[vw(i)] for i in range(N)] for s in STREAMS}
    seq = benchmark.pedantic(MappingSequence.from_map, (body,), rounds=3, iterations=1)
    assert len(seq) == N + 2
    benchmark.extra_info["ns_per_vw"] = benchmark.stats.stats.median / (N * 4) * 1e9


@pytest.mark.benchmark(group="triggermap-compile")
def test_compile_one_event_part_1e6_times(benchmark: Any) -> None:
    parts = {"one": {s: [[vw(0)]] for s in STREAMS}}
    seq = benchmark.pedantic(MappingSequence, (parts, ["one"] * 1_000_000), rounds=3)
    assert len(seq) == 1_000_002


@pytest.mark.benchmark(group="triggermap-compile")
def test_compile_1000_event_part_1000_times(benchmark: Any) -> None:
    parts = {"p": {s: [[vw(i)] for i in range(1000)] for s in STREAMS}}
    seq = benchmark.pedantic(MappingSequence, (parts, ["p"] * 1000), rounds=3)
    assert len(seq) == 1_000_002


def _engine(seq: MappingSequence, workers: int, credit: int) -> BindingEngine:
    eng = BindingEngine(seq)
    for i in range(workers):
        eng.add_worker(f"w{i}")
        eng.grant(f"w{i}", credit)
    return eng


def _bind_all(eng: BindingEngine) -> int:
    return eng.bind(N + 2).count


def _report(benchmark: Any, events: int, constraints: int) -> None:
    med = benchmark.stats.stats.median
    benchmark.extra_info["ns_per_constraint"] = med / constraints * 1e9
    benchmark.extra_info["ns_per_frame"] = med / (events * len(STREAMS)) * 1e9
    benchmark.extra_info["constraints_per_s"] = constraints / med


@pytest.mark.benchmark(group="triggermap-bind")
def test_bind_uniform_8_workers(benchmark: Any) -> None:
    seq = MappingSequence.from_uniform(STREAMS, N)
    count = benchmark.pedantic(_bind_all, setup=lambda: ((_engine(seq, 8, 10**9),), {}),
                               rounds=10)
    assert count == N + 2
    _report(benchmark, N + 2, N)


@pytest.mark.benchmark(group="triggermap-bind")
def test_bind_i_div_10_8_workers(benchmark: Any) -> None:
    seq = MappingSequence.from_map({s: [[vw(i // 10)] for i in range(N)] for s in STREAMS})
    count = benchmark.pedantic(_bind_all, setup=lambda: ((_engine(seq, 8, 10**9),), {}),
                               rounds=10)
    assert count == N + 2
    _report(benchmark, N + 2, N // 10)


@pytest.mark.benchmark(group="triggermap-bind")
def test_bind_uniform_kernel_only(benchmark: Any) -> None:
    # the compiled loop alone: output rows allocated and touched beforehand
    seq = MappingSequence.from_uniform(STREAMS, N)
    present = np.ones((N + 2, len(STREAMS)), np.uint8)
    masks = np.ones((N + 2, len(STREAMS)), np.uint64)

    def setup() -> tuple[tuple[Engine], dict[str, Any]]:
        eng = Engine(seq.compiled, DEFAULT_HORIZON)
        for _ in range(8):
            eng.grant(eng.add_worker(seq.tag_mask(["generic"])), 10**9)
        return (eng,), {}

    count = benchmark.pedantic(lambda eng: eng.bind(present, masks)[0], setup=setup, rounds=10)
    assert count == N + 2
    _report(benchmark, N + 2, N)


def _credit_rounds(eng: BindingEngine) -> int:
    # the controller's pattern: workers report completions, credits trickle in, bind each time
    done = 0
    names = list(eng.workers)
    while not eng.finished:
        for w in names:
            eng.grant(w, 32)
        done += eng.bind(4096).count
    return done


@pytest.mark.benchmark(group="triggermap-bind")
def test_bind_uniform_credit_rounds(benchmark: Any) -> None:
    seq = MappingSequence.from_uniform(STREAMS, N)
    count = benchmark.pedantic(_credit_rounds, setup=lambda: ((_engine(seq, 8, 0),), {}),
                               rounds=5)
    assert count == N + 2
    _report(benchmark, N + 2, N)
