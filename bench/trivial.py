"""Trivial worker and reducer for throughput benchmarks: a small value per event, a counter."""

from typing import Any


class TrivialWorker:
    def __init__(self, **kwargs: Any) -> None:
        pass

    def process_event(self, event: Any, parameters: Any, tick: bool = False) -> Any:
        return event.event_number


class TrivialReducer:
    def __init__(self, **kwargs: Any) -> None:
        self.publish = {"count": 0}

    def process_result(self, result: Any, parameters: Any) -> None:
        self.publish["count"] += 1


class TouchWorker(TrivialWorker):
    """Reads every byte of every frame once (a checksum), so the data really is delivered."""

    def process_event(self, event: Any, parameters: Any, tick: bool = False) -> Any:
        import numpy as np

        total = 0
        for stream in event.streams.values():
            for frame in stream.frames:
                total += int(np.frombuffer(frame, dtype=np.uint8).sum(dtype=np.uint64) & 0xFF)
        return total
