"""LeCroy MAUI decode cost: ``middlewares.lecroy.parse`` beside dranspose 0.2's parse.

Both parse the same event messages: the two sequences of
``tests/data/captures/maui-02-continuous-3.cbor.gz`` (start, 2 channels x (metadata, 1 x 8002
float64 waveforms, pickled timestamps), end: 8 ``zmq.Frame`` objects each), as workers
receive them.  0.2's parse runs under ``DRANSPOSE02_PYTHON`` (timeit in a subprocess; skipped
without it); its figure goes into ``extra_info["dr02_median_us_per_sequence"]``, with the ratio.

Run: ``python -m pytest bench/bench_parse_lecroy.py -q --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from bench.dr02_timing import dr02_median_us, record
from dranspose_fast.data.lecroy import LECROY_TYPE
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares.lecroy import parse
from tests.captures import CAPTURES, read_capture

CAPTURE = CAPTURES / "maui-02-continuous-3.cbor.gz"

DR02_TIMEIT = '''
import json, statistics, sys, timeit
import zmq
from dranspose.event import StreamData
from dranspose.data.lecroy import LECROY_TYPE
from dranspose.middlewares.lecroy import parse
m = read_capture(sys.argv[1])
events = [m[1] + m[2] + m[3] + m[4], m[1] + m[5] + m[6] + m[7]]
seqs = [StreamData(typ=LECROY_TYPE, frames=[zmq.Frame(f) for f in e]) for e in events]
def run():
    for data in seqs:
        parse(data)
times = timeit.repeat(run, number=200, repeat=15)
print(json.dumps({"median_us": statistics.median(times) / (200 * len(seqs)) * 1e6}))
'''


def _sequences() -> list[StreamData]:
    m = read_capture(CAPTURE)
    events = [m[1] + m[2] + m[3] + m[4], m[1] + m[5] + m[6] + m[7]]
    return [StreamData(typ=LECROY_TYPE, frames=[zmq.Frame(f) for f in e]) for e in events]



def _parse_all(seqs: list[StreamData]) -> int:
    n = 0
    for data in seqs:
        n += len(parse(data).data)  # type: ignore[union-attr]
    return n


@pytest.mark.benchmark(group="lecroy-sequence")
def test_parse_capture_sequences(benchmark: Any) -> None:
    """Per call: the 2 sequences of the capture (the figures below are per sequence)."""
    seqs = _sequences()
    assert benchmark(_parse_all, seqs) == 2 * len(seqs)
    record(benchmark, "LeCroy parse per sequence (2 channels x 8002 float64)", len(seqs),
           dr02_median_us(DR02_TIMEIT, str(CAPTURE)), key="_per_sequence")


@pytest.mark.benchmark(group="lecroy-control")
def test_parse_prepare_message(benchmark: Any) -> None:
    prepare = StreamData(typ=LECROY_TYPE, frames=read_capture(CAPTURE)[0])
    assert benchmark(parse, prepare).frame == 0
