"""The compiled route-and-pack step beside the Python routing it replaces.

Run: ``python -m pytest bench/bench_route.py -q --benchmark-only -p no:cacheprovider``.

1024 rows × 2 streams, each cell to one of 4 workers, STINS-like messages (a short JSON
header frame + an image frame) held as received ``zmq.Frame`` objects:

* ``route_pack`` 8 KiB: one compiled call produces the 4 packed batches;
* baseline: the same rows grouped per worker in Python and packed with
  ``dataplane.encode_events`` (what the ingester did per round before);
* ``route_pack`` 1 MiB: large frames are not copied (a time independent of the frame size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import zmq

from dranspose_fast import _route
from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.runtime import dataplane

ROWS = 1024
WORKERS = 4
HEAD = b'{"htype": "image", "frame": 1, "shape": [64, 64], "type": "uint16"}'


def _case(frame_bytes: int) -> tuple[Any, Any, list[list[list[Any]]]]:
    present = np.ones((ROWS, 2), np.uint8)
    masks = np.array([[1 << (i % WORKERS), 1 << ((i + 1) % WORKERS)] for i in range(ROWS)],
                     np.uint64)
    image = zmq.Frame(bytes(frame_bytes))
    messages = [[[zmq.Frame(HEAD), image] for _ in range(ROWS)] for _ in range(2)]
    return present, masks, messages


def _route_pack(present: Any, masks: Any, messages: Any) -> int:
    taken = np.zeros(2, np.intp)
    out = _route.route_pack(present, masks, 0, ROWS, 0, messages, taken, (1 << WORKERS) - 1,
                            dataplane.ZERO_COPY_THRESHOLD)
    return len(out[6])


@pytest.mark.benchmark(group="route-8KiB")
def test_route_pack_8k(benchmark: Any) -> None:
    present, masks, messages = _case(8192)
    assert benchmark(_route_pack, present, masks, messages) == WORKERS
    benchmark.extra_info["us/row"] = benchmark.stats.stats.median / ROWS * 1e6


@pytest.mark.benchmark(group="route-8KiB")
def test_python_group_and_encode_events_baseline(benchmark: Any) -> None:
    present, masks, messages = _case(8192)
    names = ["a", "b"]

    def run() -> int:
        out: dict[int, list[tuple[int, dict[str, StreamData]]]] = {}
        for r in range(ROWS):
            for k in range(2):
                if not present[r, k]:
                    continue
                data = make_stream_data("STINS", messages[k][r])
                mask = int(masks[r, k])
                for w in range(WORKERS):
                    if mask >> w & 1:
                        events = out.setdefault(w, [])
                        if events and events[-1][0] == r:
                            events[-1][1][names[k]] = data
                        else:
                            events.append((r, {names[k]: data}))
        return len([dataplane.encode_events(ev) for ev in out.values()])

    assert benchmark(run) == WORKERS
    benchmark.extra_info["us/row"] = benchmark.stats.stats.median / ROWS * 1e6


@pytest.mark.benchmark(group="route-1MiB")
def test_route_pack_1m_zero_copy(benchmark: Any) -> None:
    present, masks, messages = _case(1 << 20)
    assert benchmark(_route_pack, present, masks, messages) == WORKERS
    benchmark.extra_info["us/row"] = benchmark.stats.stats.median / ROWS * 1e6
