"""Worker and reducer classes for the end-to-end tests (0.2 style, prefix changed)."""

import json
import threading
import time
from typing import Any

from dranspose_fast.data.stream1 import Stream1Data
from dranspose_fast.event import EventData, ResultData
from dranspose_fast.middlewares.stream1 import parse
from dranspose_fast.parameters import IntParameter, StrParameter


class RecordWorker:
    """Reports which streams and frames of which event it saw, and its parameters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.name = kwargs["state"].name
        self.context = kwargs["context"]
        self.context["scans"] = self.context.get("scans", 0) + 1

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [StrParameter(name="roi1", default="bla"), IntParameter(name="delay_ms")]

    def process_event(self, event: EventData, parameters: Any, tick: bool = False) -> Any:
        delay = parameters["delay_ms"].value or 0
        if delay:
            time.sleep(delay / 1000)
        return {
            "event": event.event_number,
            "worker": self.name,
            "streams": {n: [len(bytes(f)) for f in d.frames] for n, d in event.streams.items()},
            "images": {n: _image(d) for n, d in event.streams.items()},
            "roi1": parameters["roi1"].value,
            "scans": self.context["scans"],
            "tick": tick,
            "rebound_from": event.rebound_from,
        }

    def finish(self, parameters: Any) -> None:
        self.context["finished"] = True


def _image(data: Any) -> Any:
    """(frame, first pixel) of a STINS image, the htype of other STINS messages."""
    if data.typ != "STINS":
        return None
    packet = parse(data)
    if isinstance(packet, Stream1Data):
        return [packet.frame, int(packet.data.flat[0])]
    return packet.htype


class TickWorker(RecordWorker):
    def get_tick_interval(self, parameters: Any) -> float:
        return 0.2


class FailingRecordWorker(RecordWorker):
    def process_event(self, event: EventData, parameters: Any, tick: bool = False) -> Any:
        if event.event_number == 3:
            raise RuntimeError("user bug in event 3")
        return super().process_event(event, parameters, tick)


class RecordReducer:
    """Publishes every result as one JSON string (one HTTP read for the tests)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.records: list[Any] = []
        self.lock = threading.Lock()
        self.publish: dict[str, Any] = {"records": "[]", "count": 0, "finished": 0}

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [IntParameter(name="reduce_delay_ms")]

    def process_result(self, result: ResultData, parameters: Any) -> None:
        delay = parameters["reduce_delay_ms"].value or 0
        if delay:
            time.sleep(delay / 1000)
        with self.lock:
            self.records.append(result.payload)

    def _publish(self) -> None:
        with self.lock:
            self.publish["records"] = json.dumps(self.records)
            self.publish["count"] = len(self.records)

    def timer(self, parameters: Any) -> float:
        self._publish()
        return 0.1

    def finish(self, parameters: Any) -> None:
        self._publish()
        self.publish["finished"] = 1
