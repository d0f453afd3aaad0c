"""Eiger legacy decode cost: ``middlewares.eiger_legacy.parse`` beside dranspose 0.2's parse.

Both parse the same messages, as ``zmq.Frame`` parts received from a socket (an inproc pair),
as workers receive them (a frame made from ``bytes`` would hand 0.2 its bytes uncopied):

* the capture ``tests/data/captures/eiger-small.cbors`` (header of 9 parts, 3 bslz4 images of
  5 parts with 20000-byte image parts, end), per message;
* one uncompressed 2048 x 1024 uint16 image (4 MiB image part): 0.2 copies the image part
  into ``bytes``, ours hands a view of it.

Every parse gets frames fresh from the socket (pyzmq caches ``Frame.bytes``, so re-parsing one
frame would hide 0.2's copy; a worker parses each frame once).  0.2's parse runs under
``DRANSPOSE02_PYTHON`` (a subprocess; not measured without it); its figure goes into
``extra_info["dr02_median_us"]``, with the ratio.

Run: ``python -m pytest bench/bench_parse_eiger_legacy.py -q --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import zmq

from bench.dr02_timing import dr02_median_us, record
from dranspose_fast.event import StreamData
from dranspose_fast.middlewares.eiger_legacy import parse
from tests.captures import CAPTURES, read_capture

CAPTURE = CAPTURES / "eiger-small.cbors"
SHAPE = [1024, 2048]  # DECTRIS [x, y]: 2048 rows of 1024 pixels

DR02_TIMEIT = '''
import json, statistics, sys, time
import zmq
from dranspose.event import StreamData
from dranspose.middlewares.eiger_legacy import parse
if sys.argv[1] == "capture":
    msgs = read_capture(sys.argv[2])
else:
    msgs = [json.loads(sys.argv[2])]
    msgs[0][2] = bytes(2 * msgs[0][2])  # the image part: its size in uint16 pixels
    msgs[0] = [m.encode() if isinstance(m, str) else m for m in msgs[0]]
ctx = zmq.Context()
push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
push.bind("inproc://parts")
pull.connect("inproc://parts")
def received(m):
    push.send_multipart(m)
    return pull.recv_multipart(copy=False)
# Fresh frames for every parse: pyzmq caches Frame.bytes, and a worker parses a frame once.
copies = 40 if sys.argv[1] == "capture" else 10
times = []
for _ in range(15):
    data = [StreamData(typ="EIGER_LEGACY", frames=received(m)) for _ in range(copies)
            for m in msgs]
    t0 = time.perf_counter()
    for d in data:
        parse(d)
    times.append((time.perf_counter() - t0) / len(data))
    del data
print(json.dumps({"median_us": statistics.median(times) * 1e6}))
'''


def _image_parts() -> list[Any]:
    """An uncompressed image message as JSON-able parts (the image part as its pixel count)."""
    pixels = SHAPE[0] * SHAPE[1]
    return [
        json.dumps({"htype": "dimage-1.0", "frame": 0, "series": 1,
                    "hash": "0" * 32}),
        json.dumps({"htype": "dimage_d-1.0", "shape": SHAPE, "type": "uint16",
                    "encoding": "<", "size": 2 * pixels}),
        pixels,
        json.dumps({"htype": "dconfig-1.0", "real_time": 1, "start_time": 2, "stop_time": 3}),
        "{}",
    ]


def _received(messages: list[list[bytes]]) -> list[StreamData]:
    """The messages as received ``zmq.Frame`` parts (through an inproc PUSH/PULL pair)."""
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    push.bind("inproc://parts")
    pull.connect("inproc://parts")
    out = []
    for m in messages:
        push.send_multipart(m)
        out.append(StreamData(typ="EIGER_LEGACY", frames=pull.recv_multipart(copy=False)))
    push.close()
    pull.close()
    return out


def _parse_all(messages: list[StreamData]) -> int:
    return sum(1 for data in messages if parse(data) is not None)


@pytest.mark.benchmark(group="eiger-legacy-capture")
def test_parse_capture(benchmark: Any) -> None:
    """Per call: the 5 messages of the capture (figures per message)."""
    capture = read_capture(CAPTURE)

    def fresh() -> tuple[tuple[list[StreamData]], dict[str, Any]]:
        return (_received(capture),), {}

    n = benchmark.pedantic(_parse_all, setup=fresh, rounds=400)
    assert n == len(capture)
    record(benchmark, "eiger legacy parse, capture, per message", len(capture),
           dr02_median_us(DR02_TIMEIT, "capture", str(CAPTURE)))


@pytest.mark.benchmark(group="eiger-legacy-4MiB")
def test_parse_uncompressed_4mib_image(benchmark: Any) -> None:
    parts = _image_parts()
    message = [p.encode() if isinstance(p, str) else bytes(2 * p) for p in parts]
    given: list[StreamData] = []

    def fresh() -> tuple[tuple[StreamData], dict[str, Any]]:
        given[:] = _received([message])
        return (given[0],), {}

    image = benchmark.pedantic(parse, setup=fresh, rounds=200)
    assert image.array.shape == (SHAPE[1], SHAPE[0])  # type: ignore[union-attr]
    view = np.frombuffer(given[0].frames[2], np.uint8)
    assert np.shares_memory(image.array, view)  # type: ignore[union-attr]
    record(benchmark, "eiger legacy parse, 4 MiB uncompressed image", 1,
           dr02_median_us(DR02_TIMEIT, "image", json.dumps(parts)))
