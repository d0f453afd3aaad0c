"""Worker, reducer and source classes written in dranspose 0.2 style.

Only the import prefix differs from what a dranspose 0.2 user writes (``dranspose.`` ->
``dranspose_fast.``); the tests run them unchanged to prove compatibility.
"""

import json
import threading
import time
from typing import Any

from dranspose_fast.event import EventData, InternalWorkerMessage, ResultData, StreamData
from dranspose_fast.parameters import (
    BinaryParameter,
    BoolParameter,
    FloatParameter,
    IntParameter,
    StrParameter,
)
from dranspose_fast.protocol import ParameterName, StreamName, WorkParameter


class EchoWorker:
    """Returns the event number, its stream names and the first bytes of every frame."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.name = kwargs["state"].name
        self.context = kwargs["context"]
        self.seen: list[int] = []

    @staticmethod
    def describe_parameters() -> list[Any]:
        return [
            StrParameter(name="roi1", default="bla"),
            IntParameter(name="int_param"),
            FloatParameter(name="float_param", default=1.5),
            BoolParameter(name="bool_param"),
            BinaryParameter(name="file_parameter"),
        ]

    def process_event(
        self, event: EventData, parameters: dict[ParameterName, WorkParameter], tick: bool = False
    ) -> Any:
        self.seen.append(event.event_number)
        frames = {
            name: [bytes(f)[:16] for f in data.frames] for name, data in event.streams.items()
        }
        return {
            "event": event.event_number,
            "frames": frames,
            "worker": self.name,
            "tick": tick,
            "int_param": parameters["int_param"].value,
            "roi1": parameters["roi1"].value,
            "seen_before": len(self.seen) - 1,
        }

    def finish(self, parameters: dict[ParameterName, WorkParameter] | None = None) -> None:
        self.context["finished"] = True


class EchoReducer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.publish: dict[str, Any] = {"results": {}, "params": {}, "ticks": 0}
        self.finished = False
        self.timer_calls = 0

    def process_result(
        self, result: ResultData, parameters: dict[ParameterName, WorkParameter] | None = None
    ) -> None:
        assert result.parameters_hash is not None
        self.publish["results"].setdefault(str(result.event_number), []).append(result.payload)
        self.publish["ticks"] += int(result.payload["tick"])

    def timer(self, parameters: dict[ParameterName, WorkParameter]) -> float:
        self.timer_calls += 1
        self.publish["params"] = {n: p.data for n, p in parameters.items()}
        return 0.05

    def finish(self, parameters: dict[ParameterName, WorkParameter] | None = None) -> None:
        self.finished = True
        self.publish["finished"] = 1


class SlidesWorker:
    """The plainest 0.2 style: no constructor arguments, ``process_event(event, parameters)``."""

    def __init__(self) -> None:
        self.number = 0

    def process_event(self, event: EventData, parameters: Any = None) -> Any:
        self.number += 1
        return {"n": event.event_number}


class SlidesReducer:
    def __init__(self) -> None:
        self.publish: dict[str, Any] = {"map": {}}

    def process_result(self, result: ResultData, parameters: Any = None) -> None:
        self.publish["map"][str(result.payload["n"])] = result.worker


class FailingWorker(EchoWorker):
    """Raises on every third event; the replay must log, count and go on."""

    def process_event(self, event: EventData, parameters: Any, tick: bool = False) -> Any:
        if event.event_number % 3 == 0:
            raise RuntimeError(f"user bug at event {event.event_number}")
        return super().process_event(event, parameters, tick)


class StatefulWorker:
    """Remembers which events it saw, to check which worker got which event."""

    def __init__(self, **kwargs: Any) -> None:
        self.name = kwargs["state"].name

    def process_event(self, event: EventData, parameters: Any, tick: bool) -> Any:
        return {"worker": self.name, "event": event.event_number,
                "streams": sorted(event.streams)}


class CollectReducer:
    def __init__(self, **kwargs: Any) -> None:
        self.publish: dict[str, Any] = {"by_event": {}}
        self.lock = threading.Lock()

    def process_result(self, result: ResultData, parameters: Any) -> None:
        with self.lock:
            self.publish["by_event"].setdefault(result.payload["event"], []).append(
                (result.payload["worker"], tuple(result.payload["streams"])))


def json_stream(value: Any) -> StreamData:
    return StreamData(typ="JSON", frames=[json.dumps(value).encode()])


class CountingSource:
    """A 0.2 source class: one generator per stream; ``slow`` streams have every other event."""

    def __init__(self, n: int = 20, delay: float = 0.0) -> None:
        self.n = n
        self.delay = delay

    def fast(self) -> Any:
        for i in range(self.n):
            if self.delay:
                time.sleep(self.delay)
            yield InternalWorkerMessage(
                event_number=i, streams={StreamName("fast"): json_stream({"i": i})}
            )

    def slow(self) -> Any:
        for i in range(0, self.n // 2, 2):
            yield InternalWorkerMessage(
                event_number=i, streams={StreamName("slow"): json_stream({"j": i})}
            )

    def get_source_generators(self) -> list[Any]:
        return [self.fast(), self.slow()]


class SlowSource(CountingSource):
    def __init__(self) -> None:
        super().__init__(n=30, delay=0.05)


class TickingWorker(EchoWorker):
    def get_tick_interval(self, parameters: dict[ParameterName, WorkParameter]) -> float:
        return 0.1
