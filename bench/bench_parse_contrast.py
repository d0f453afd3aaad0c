"""contrast decode cost: ``middlewares.contrast.parse`` beside dranspose 0.2's parse.

Both parse the 20 ``running`` messages of ``tests/data/captures/contrast-dump.cbors`` (pickled
dicts of about 2.4 KB with numpy arrays) as ``zmq.Frame`` messages.  Ours unpickles with the
restricted unpickler (``helpers.safe_pickle``), 0.2 with plain ``pickle.loads``.  0.2's parse
runs under ``DRANSPOSE02_PYTHON`` (timeit in a subprocess; skipped without it).

Run: ``python -m pytest bench/bench_parse_contrast.py -q --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import zmq

from bench.dr02_timing import dr02_median_us, record
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares.contrast import parse
from tests.captures import CAPTURES, read_capture

CAPTURE = CAPTURES / "contrast-dump.cbors"

DR02_TIMEIT = '''
import json, pickle, statistics, sys, timeit
import zmq
from dranspose.event import StreamData
from dranspose.middlewares.contrast import parse
msgs = read_capture(sys.argv[1])
running = [StreamData(typ="contrast", frames=[zmq.Frame(m[0])]) for m in msgs
           if pickle.loads(m[0])["status"] == "running"]
def run():
    for data in running:
        parse(data)
times = timeit.repeat(run, number=50, repeat=15)
print(json.dumps({"median_us": statistics.median(times) / (50 * len(running)) * 1e6}))
'''


def _running() -> list[StreamData]:
    msgs = read_capture(CAPTURE)
    return [StreamData(typ="contrast", frames=[zmq.Frame(m[0])]) for m in msgs
            if pickle.loads(m[0])["status"] == "running"]  # our own capture: trusted



def _parse_all(msgs: list[StreamData]) -> int:
    return sum(parse(data).status == "running" for data in msgs)


@pytest.mark.benchmark(group="contrast-running")
def test_parse_capture_running(benchmark: Any) -> None:
    """Per call: the 20 running messages (the figures below are per message)."""
    msgs = _running()
    assert benchmark(_parse_all, msgs) == len(msgs) == 20
    record(benchmark, "contrast parse per running message", len(msgs),
           dr02_median_us(DR02_TIMEIT, str(CAPTURE)), key="_per_message")
