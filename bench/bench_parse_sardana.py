"""Sardana decode cost: ``middlewares.sardana.parse`` beside dranspose 0.2's parse.

There is no capture of this protocol (it arrives over HTTP); the scan is synthesized as the
HTTP ingester forwards it: one data description (0.2's example, with column descriptions), 200
records of 12 columns, the end; each one JSON frame (``bytes``, as the ingester sends them).
0.2's parse runs under ``DRANSPOSE02_PYTHON`` (a subprocess; not measured without it); its
figure goes into ``extra_info["dr02_median_us"]``, with the ratio.

Run: ``python -m pytest bench/bench_parse_sardana.py -q --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import json
from typing import Any

from bench.dr02_timing import dr02_median_us, record
from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.middlewares.sardana import parse

POINTS = 200

DR02_TIMEIT = '''
import json, statistics, sys, time
from dranspose.event import StreamData
from dranspose.middlewares.sardana import parse
frames = [f.encode() for f in json.loads(sys.argv[1])]
data = [StreamData(typ="sardana", frames=[f]) for f in frames]
times = []
for _ in range(25):
    t0 = time.perf_counter()
    for d in data:
        parse(d)
    times.append((time.perf_counter() - t0) / len(data))
print(json.dumps({"median_us": statistics.median(times) * 1e6}))
'''


def scan_frames() -> list[str]:
    columns = [f"ct{k:02d}" for k in range(9)]
    desc = {
        "type": "DataDescription", "serialno": 20338, "scandir": "/data/staff/x/20230413",
        "title": f"ascan dummy_mot_01 0.0 0.1 {POINTS} 0.1",
        "column_desc": [{"name": c, "label": c, "dtype": "float64", "shape": []}
                        for c in ["point_nb", "dummy_mot_01", "timestamp", *columns]],
        "ref_moveables": ["dummy_mot_01"], "estimatedtime": 21.5,
        "total_scan_intervals": POINTS, "starttime": "Mon Apr 17 14:19:35 2023",
        "counters": [f"tango://host:10000/expchan/{c}/1" for c in columns],
        "scanfile": ["stream.daq", "tests_03.h5"],
    }
    records = [{"type": "RecordData", "timestamp": 0.1 * i + 0.0123, "point_nb": i,
                "dummy_mot_01": i / POINTS, **{c: 1000.5 + i * k for k, c in enumerate(columns)}}
               for i in range(POINTS)]
    return [json.dumps(m) for m in [desc, *records, {"type": "RecordEnd"}]]


def test_parse_sardana_scan(benchmark: Any) -> None:
    frames = scan_frames()
    data: list[StreamData] = [make_stream_data("sardana", [f.encode()]) for f in frames]

    def run() -> None:
        for d in data:
            parse(d)

    benchmark(run)
    record(benchmark, "sardana parse per message", len(data),
           dr02_median_us(DR02_TIMEIT, json.dumps(frames)))
