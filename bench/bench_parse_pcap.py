"""PandA decode cost: PCAP (ZeroMQ) parse and row split, PositionCap (TCP) parse, beside 0.2's.

Messages: the capture ``tests/data/captures/pcap-zmq.cbors`` (100 blocks, 1500 rows) split
into rows by our ingester's framer, as workers receive them; for PositionCap, one header and
1500 rows of four fields as the PandA data port sends them.  dranspose 0.2's figures come from
timeit in a subprocess under ``DRANSPOSE02_PYTHON`` (skipped without it) and go into
``extra_info`` with the ratio.  0.2's split is its ingester's loop body (validate the block,
build a ``PCAPData`` per row, dump it as JSON), timed without sockets.

Run: ``python -m pytest bench/bench_parse_pcap.py -q --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from bench.dr02_timing import dr02_timing, record
from dranspose_fast.data.pcap import PCAPData
from dranspose_fast.event import StreamData
from dranspose_fast.ingesters.zmqsub_pcap import PCAPFramer
from dranspose_fast.middlewares.pcap import parse
from dranspose_fast.middlewares.positioncap import PositioncapParser
from tests.captures import read_capture

DR02_TIMEIT = '''
import json, statistics, sys, timeit
import cbor2
from dranspose.event import StreamData
from dranspose.data.pcap import PCAPPacket, PCAPData
from dranspose.middlewares.pcap import parse
from dranspose.middlewares.positioncap import PositioncapParser
blocks, rows, raw = cbor2.loads(sys.stdin.buffer.read())
rows = [StreamData(typ="PCAP", frames=[r]) for r in rows]
raw = [StreamData(typ="PCAP_RAW", frames=[r]) for r in raw]
def parse_rows():
    for d in rows:
        parse(d)
def split():  # the loop body of 0.2's ZmqSubPCAPIngester for data messages
    for b in blocks:
        packet = PCAPPacket.validate_json(b)
        vect = {k: len(v) for k, v in iter(packet) if isinstance(v, list)}
        for i in range(set(vect.values()).pop()):
            frame = {}
            for k, v in iter(packet):
                frame[k] = v[i] if k in vect else (v + i if k == "frame_number" else v)
            PCAPData(**frame).model_dump_json().encode()
def parse_raw():
    p = PositioncapParser()
    for d in raw:
        p.parse(d)
out = {}
for name, fn, n in [("rows", parse_rows, len(rows)), ("split", split, len(blocks)),
                    ("raw", parse_raw, len(raw))]:
    times = timeit.repeat(fn, number=3, repeat=7)
    out[name] = statistics.median(times) / (3 * n) * 1e6
print(json.dumps(out))
'''

_dr02: dict[str, float] = {}


def _messages() -> tuple[list[bytes], list[bytes], list[bytes]]:
    msgs = read_capture("pcap-zmq.cbors")
    blocks = [m[0] for m in msgs[1:-1]]
    framer = PCAPFramer()
    rows = [bytes(out[0]) for m in msgs for _k, out in framer.feed(m)][1:-1]
    head = (b"arm_time: 2024-10-07T08:49:10.627Z\nmissed: 0\nprocess: Scaled\nformat: ASCII\n"
            b"fields:\n PCAP.BITS2 uint32 Value\n COUNTER1.OUT double Min\n"
            b" COUNTER1.OUT double Max\n PCAP.TS_TRIG double Value\n\n")
    raw = [head] + [f" {i} {i * 0.5} {i * 1.5 + 0.25} {i * 1e-3}\n".encode()
                    for i in range(1500)]
    return blocks, rows, raw



def _dr02_us(name: str) -> float | None:
    if not _dr02:
        _dr02.update(dr02_timing(DR02_TIMEIT, stdin=cbor2.dumps(list(_messages()))) or {})
    return _dr02.get(name)


def _record(benchmark: Any, name: str, n: int, what: str) -> None:
    record(benchmark, f"{name} per {what}", n, _dr02_us(name), key=f"_per_{what}", ndigits=3)


@pytest.mark.benchmark(group="pcap-parse-row")
def test_parse_pcap_rows(benchmark: Any) -> None:
    """Per call: the 1500 row messages of the capture."""
    rows = [StreamData(typ="PCAP", frames=[r]) for r in _messages()[1]]

    def run() -> int:
        total = 0
        for d in rows:
            packet = parse(d)
            assert isinstance(packet, PCAPData)
            total += packet.frame_number
        return total

    assert benchmark(run) == sum(range(1500))
    _record(benchmark, "rows", len(rows), "row")


@pytest.mark.benchmark(group="pcap-split-block")
def test_split_pcap_blocks(benchmark: Any) -> None:
    """Per call: the 100 blocks of the capture split into 1500 row messages."""
    blocks = _messages()[0]

    def run() -> int:
        framer = PCAPFramer()
        return sum(len(framer.feed([b])) for b in blocks)

    assert benchmark(run) == 1500
    _record(benchmark, "split", len(blocks), "block")


@pytest.mark.benchmark(group="positioncap-parse-row")
def test_parse_positioncap_rows(benchmark: Any) -> None:
    """Per call: a header and 1500 rows of four fields."""
    raw = [StreamData(typ="PCAP_RAW", frames=[r]) for r in _messages()[2]]

    def run() -> int:
        parser = PositioncapParser()
        for d in raw:
            last = parser.parse(d)
        return last.fields["PCAP.BITS2.Value"].value  # type: ignore[union-attr, return-value]

    assert benchmark(run) == 1499
    _record(benchmark, "raw", len(raw), "row")
