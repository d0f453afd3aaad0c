"""Xspress3 decode cost: ``middlewares.xspress.parse`` beside dranspose 0.2's parse.

Both parse the same messages: the 20 images of ``tests/data/captures/xspress3-dump.cbors``
(4 x 4096 uint32 spectra + the pickled metadata list) as three-frame ``zmq.Frame`` messages,
as workers receive them.  0.2's parse runs under ``DRANSPOSE02_PYTHON`` (timeit in a
subprocess; skipped without it); its figure goes into ``extra_info["dr02_median_us"]`` of the
image benchmark, with the ratio.

Run: ``python -m pytest bench/bench_parse_xspress3.py -q --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from bench.dr02_timing import dr02_median_us, record
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares.xspress import parse
from tests.captures import CAPTURES, read_capture

CAPTURE = CAPTURES / "xspress3-dump.cbors"

DR02_TIMEIT = '''
import contextlib, io, json, statistics, sys, timeit
import zmq
from dranspose.event import StreamData
from dranspose.middlewares.xspress import parse
msgs = read_capture(sys.argv[1])
images = [StreamData(typ="xspress", frames=[zmq.Frame(f) for f in
          msgs[i] + msgs[i + 1] + msgs[i + 2]]) for i in range(1, len(msgs) - 1, 3)]
def run():
    for data in images:
        parse(data)
with contextlib.redirect_stdout(io.StringIO()):  # 0.2's parse prints every packet
    times = timeit.repeat(run, number=20, repeat=15)
print(json.dumps({"median_us": statistics.median(times) / (20 * len(images)) * 1e6}))
'''


def _images() -> list[StreamData]:
    msgs = read_capture(CAPTURE)
    return [StreamData(typ="xspress", frames=[zmq.Frame(f) for f in msgs[i] + msgs[i + 1]
                                              + msgs[i + 2]])
            for i in range(1, len(msgs) - 1, 3)]



def _parse_all(images: list[StreamData]) -> int:
    n = 0
    for data in images:
        n += parse(data).data.shape[0]  # type: ignore[union-attr]
    return n


@pytest.mark.benchmark(group="xspress3-image")
def test_parse_capture_images(benchmark: Any) -> None:
    """Per call: the 20 images of the capture (divide the figures by 20 per image)."""
    images = _images()
    assert benchmark(_parse_all, images) == 4 * len(images)
    record(benchmark, "xspress3 parse per image", len(images),
           dr02_median_us(DR02_TIMEIT, str(CAPTURE)), key="_per_image")


@pytest.mark.benchmark(group="xspress3-header")
def test_parse_start_message(benchmark: Any) -> None:
    start = StreamData(typ="xspress", frames=read_capture(CAPTURE)[0])
    assert benchmark(parse, start).htype == "header"
