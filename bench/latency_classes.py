"""Worker and reducer classes of ``bench/e2e.py --latency``: frame sent → result reduced.

The paced source writes its send time (``time.time()``, one machine so one clock) into each
STINS image header as ``timestamps: {"sent": t}``. ``LatencyWorker`` returns that time and
its own clock when ``process_event`` ran; ``LatencyReducer`` records ``now - sent`` per result
(and the worker's share, ``worker - sent``) and, at ``finish``, writes them in seconds to the
``.npz`` file named by ``DFAST_BENCH_LATENCY_FILE`` (arrays ``events``, ``latency``,
``to_worker``); it also publishes the count.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from dranspose_fast.data.stream1 import Stream1Data
from dranspose_fast.middlewares.stream1 import parse

LATENCY_FILE_ENV = "DFAST_BENCH_LATENCY_FILE"


class LatencyWorker:
    def __init__(self, **kwargs: Any) -> None:
        pass

    def process_event(self, event: Any, parameters: Any, tick: bool = False) -> Any:
        now = time.time()
        for data in event.streams.values():
            packet = parse(data)
            if isinstance(packet, Stream1Data):
                stamps = getattr(packet, "timestamps", None) or {}
                return (stamps.get("sent"), now)
        return None  # series header and end: nothing to time


class LatencyReducer:
    def __init__(self, **kwargs: Any) -> None:
        self.events: list[int] = []
        self.latency: list[float] = []
        self.to_worker: list[float] = []
        self.publish: dict[str, Any] = {"count": 0}

    def process_result(self, result: Any, parameters: Any) -> None:
        now = time.time()
        if result.payload is None or result.payload[0] is None:
            return
        sent, at_worker = result.payload
        self.events.append(result.event_number)
        self.latency.append(now - sent)
        self.to_worker.append(at_worker - sent)
        self.publish["count"] = len(self.latency)

    def finish(self, parameters: Any) -> None:
        path = os.environ.get(LATENCY_FILE_ENV)
        if not path:
            return
        tmp = path + ".tmp.npz"
        np.savez(tmp, events=np.asarray(self.events, np.int64),
                 latency=np.asarray(self.latency, np.float64),
                 to_worker=np.asarray(self.to_worker, np.float64))
        os.replace(tmp, path)  # readers never see a half-written file
