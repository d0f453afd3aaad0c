"""Compiled assembly (``_assemble``) against the same merge written in Python.

Run: ``python -m pytest bench/bench_assemble.py -q --benchmark-only -p no:cacheprovider``.

* ``unpack+assemble``: 10,000 events of one 256-byte frame from one ingester, decoded from
  the packed batch and assembled into ``EventData`` (the worker's per-batch path). Small
  frames on purpose: with 8 KiB frames the 80 MB of copies and page faults per round hide
  the per-event cost and make the order of the tests matter.
* ``assemble-two-ingesters``: 10,000 events whose two streams come from two ingesters.

Baseline in the same run: the pure-Python merge (dict operations per event, then
``make_event_data``), which is what the worker ran before the kernel.
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from dranspose_fast import _assemble
from dranspose_fast.event import EventData, StreamData, make_event_data, make_stream_data
from dranspose_fast.runtime import dataplane

N = 10_000
FRAME = b"x" * 8192
SMALL = b"x" * 256


def python_add(
    events: list[tuple[int, dict[str, StreamData]]], expected: dict[int, int],
    pending: dict[int, dict[str, StreamData]],
) -> list[EventData]:
    ready = []
    for evn, streams in events:
        have = pending.get(evn)
        if have is None:
            count = expected.get(evn)
            if count is not None and len(streams) >= count:
                del expected[evn]
                ready.append(make_event_data(evn, streams))
            else:
                pending[evn] = streams
            continue
        for name, data in streams.items():
            if name not in have:
                have[name] = data
        count = expected.get(evn)
        if count is not None and len(have) >= count:
            del expected[evn]
            del pending[evn]
            ready.append(make_event_data(evn, have))
    return ready


def _compiled(events: list[Any], expected: dict[int, int], pending: dict[int, Any]) -> list[Any]:
    ready: list[EventData] = []
    _assemble.add(events, expected, pending, ready)
    return ready


ADDERS = {"compiled": _compiled, "python": python_add}


@pytest.mark.benchmark(group="unpack+assemble")
@pytest.mark.parametrize("impl", sorted(ADDERS))
def test_unpack_and_assemble_one_ingester(benchmark: BenchmarkFixture, impl: str) -> None:
    add = ADDERS[impl]
    batches = [
        dataplane.encode_events(
            [(e, {"eiger": make_stream_data("STINS", [b"{}", SMALL])}) for e in range(i, i + 250)]
        )
        for i in range(0, N, 250)
    ]

    def run() -> int:
        expected = dict.fromkeys(range(N), 1)
        pending: dict[int, Any] = {}
        done = 0
        for frames in batches:
            done += len(add(dataplane.decode_events(frames), expected, pending))
        return done

    assert benchmark.pedantic(run, rounds=20, warmup_rounds=3) == N
    benchmark.extra_info["us_per_event"] = benchmark.stats.stats.median / N * 1e6


@pytest.mark.benchmark(group="assemble-two-ingesters")
@pytest.mark.parametrize("impl", sorted(ADDERS))
def test_assemble_two_ingesters(benchmark: BenchmarkFixture, impl: str) -> None:
    add = ADDERS[impl]
    a = [(e, {"a": make_stream_data("STINS", [FRAME])}) for e in range(N)]
    b = [(e, {"b": make_stream_data("STINS", [FRAME])}) for e in range(N)]

    def run() -> int:
        expected = dict.fromkeys(range(N), 2)
        pending: dict[int, Any] = {}
        add([(e, dict(s)) for e, s in a], expected, pending)
        return len(add(b, expected, pending))

    assert benchmark.pedantic(run, rounds=20, warmup_rounds=3) == N
    benchmark.extra_info["us_per_event"] = benchmark.stats.stats.median / N * 1e6
