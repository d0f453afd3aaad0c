"""Trivial worker and reducer for throughput benchmarks: a small value per event, a counter.

``TrivialReducer`` notes the wall-clock time of each result and, at ``finish``, writes the
last one to the file named by ``DFAST_BENCH_DONE_FILE``: the end of a throughput run measured
where the raw relay's sink measures it (the last stage done), without the controller's
detection of the scan's end and the REST polling that reads it.
"""

import os
import time
from typing import Any

DONE_FILE_ENV = "DFAST_BENCH_DONE_FILE"


class TrivialWorker:
    def __init__(self, **kwargs: Any) -> None:
        pass

    def process_event(self, event: Any, parameters: Any, tick: bool = False) -> Any:
        return event.event_number


class TrivialReducer:
    def __init__(self, **kwargs: Any) -> None:
        self.publish = {"count": 0}
        self.last_result = 0.0

    def process_result(self, result: Any, parameters: Any) -> None:
        self.publish["count"] += 1
        self.last_result = time.time()

    def finish(self, parameters: Any) -> None:
        path = os.environ.get(DONE_FILE_ENV)
        if path:
            with open(path + ".tmp", "w") as f:
                f.write(repr(self.last_result))
            os.replace(path + ".tmp", path)


class TouchWorker(TrivialWorker):
    """Reads every byte of every frame once (a checksum), so the data really is delivered."""

    def process_event(self, event: Any, parameters: Any, tick: bool = False) -> Any:
        import numpy as np

        total = 0
        for stream in event.streams.values():
            for frame in stream.frames:
                total += int(np.frombuffer(frame, dtype=np.uint8).sum(dtype=np.uint64) & 0xFF)
        return total
