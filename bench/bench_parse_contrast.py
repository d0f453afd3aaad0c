"""contrast decode cost: ``middlewares.contrast.parse`` beside dranspose 0.2's parse.

Both parse the 20 ``running`` messages of ``tests/data/captures/contrast-dump.cbors`` (pickled
dicts of about 2.4 KB with numpy arrays) as ``zmq.Frame`` messages.  Ours unpickles with the
restricted unpickler (``helpers.safe_pickle``), 0.2 with plain ``pickle.loads``.  0.2's parse
runs under ``DRANSPOSE02_PYTHON`` (timeit in a subprocess; skipped without it).

Run: ``python -m pytest bench/bench_parse_contrast.py -q --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from typing import Any

import pytest
import zmq

from dranspose_fast.event import StreamData
from dranspose_fast.middlewares.contrast import parse
from tests.captures import CAPTURES, read_capture

CAPTURE = CAPTURES / "contrast-dump.cbors"

DR02_TIMEIT = '''
import json, pickle, statistics, sys, timeit
import cbor2, zmq
from dranspose.event import StreamData
from dranspose.middlewares.contrast import parse
msgs = []
with open(sys.argv[1], "rb") as fh:
    while True:
        try:
            msgs.append(cbor2.load(fh))
        except (cbor2.CBORDecodeEOF, EOFError):
            break
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


def _dr02_median_us() -> float | None:
    python = os.environ.get("DRANSPOSE02_PYTHON", "")
    if not python or not os.access(python, os.X_OK):
        return None
    res = subprocess.run([python, "-c", DR02_TIMEIT, str(CAPTURE)], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"dranspose 0.2 timing failed: {res.stderr[-1000:]}")
    return float(json.loads(res.stdout)["median_us"])


def _parse_all(msgs: list[StreamData]) -> int:
    return sum(parse(data).status == "running" for data in msgs)


@pytest.mark.benchmark(group="contrast-running")
def test_parse_capture_running(benchmark: Any) -> None:
    """Per call: the 20 running messages (the figures below are per message)."""
    msgs = _running()
    assert benchmark(_parse_all, msgs) == len(msgs) == 20
    ours_us = benchmark.stats.stats.median / len(msgs) * 1e6
    benchmark.extra_info["ours_median_us_per_message"] = round(ours_us, 2)
    theirs = _dr02_median_us()
    if theirs is not None:
        benchmark.extra_info["dr02_median_us_per_message"] = round(theirs, 2)
        benchmark.extra_info["speedup"] = round(theirs / ours_us, 1)
    print(f"\ncontrast parse per running message: ours {ours_us:.2f} us, dranspose 0.2 "
          + (f"{theirs:.2f} us ({theirs / ours_us:.1f}x)" if theirs is not None
             else "not measured (DRANSPOSE02_PYTHON unset)"))
