"""Worker and reducer classes for the load tests (``test_mixed_cells``, ``test_overload``).

``FrameLog`` records, for every frame a worker gets, (event, stream index, frame id) in plain
lists and sends them to the reducer in chunks of numpy arrays, so the reducer handles a few
dozen results per worker instead of one per event.  The frame id of a STINS image is its
first uint32 pixel (``StinsSource.image(i)`` is filled with ``i``); a STINS message without an
image is ``HEADER`` or ``END``.

Results of events processed after the series end (processing is not strictly in event order
when several ingesters feed a worker) go out at once, so nothing stays in the buffer when the
scan ends (results of ``finish`` are not sent).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Final

import numpy as np

from dranspose_fast.event import EventData, ResultData

#: Stream name → index in the recorded arrays.
STREAMS: Final[tuple[str, ...]] = ("a", "b", "c", "eiger")
STREAM_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(STREAMS)}
#: Frame ids of STINS messages without image data.
HEADER: Final = -1
END: Final = -2
#: Frames buffered before a chunk goes to the reducer.
CHUNK: Final = 4096


def frame_id(frames: list[Any]) -> int:
    """The first uint32 of a STINS image, ``HEADER``/``END`` for the series messages."""
    if len(frames) >= 2:
        return int.from_bytes(memoryview(frames[1])[:4], "little")
    return END if b"series_end" in bytes(frames[0]) else HEADER


class FrameLog:
    """Records every frame it gets; see the module docstring."""

    #: Seconds slept per event (subclasses make it slow).
    delay: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.name: str = kwargs["state"].name
        self.events: list[int] = []
        self.streams: list[int] = []
        self.ids: list[int] = []
        self.ended = False

    def process_event(self, event: EventData, parameters: Any, tick: bool = False) -> Any:
        evn = event.event_number
        for stream, data in event.streams.items():
            fid = frame_id(data.frames)
            if fid == END:
                self.ended = True
            self.events.append(evn)
            self.streams.append(STREAM_INDEX.get(stream, -1))
            self.ids.append(fid)
        if self.delay:
            time.sleep(self.delay)
        if self.ended or len(self.events) >= CHUNK:
            return self._chunk()
        return None

    def _chunk(self) -> dict[str, Any]:
        chunk = {"worker": self.name,
                 "event": np.array(self.events, dtype=np.int64),
                 "stream": np.array(self.streams, dtype=np.int64),
                 "id": np.array(self.ids, dtype=np.int64)}
        self.events, self.streams, self.ids = [], [], []
        return chunk

    def finish(self, parameters: Any) -> None:
        if self.events:  # cannot happen when the series end reached this worker
            raise RuntimeError(f"{self.name}: {len(self.events)} frames never sent")


class SlowFrameLog(FrameLog):
    """``FrameLog`` taking 1 ms per event: about 1000 events/s per worker."""

    delay = 0.001


class VerySlowFrameLog(FrameLog):
    """``FrameLog`` taking 30 ms per event."""

    delay = 0.03


class FrameLogReducer:
    """Concatenates the chunks per worker; publishes them at ``finish``.

    ``publish``: ``{worker: {"event", "stream", "id"}: int64 arrays, "workers": JSON list,
    "chunks": n, "finished": 0/1}``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.chunks: dict[str, list[dict[str, Any]]] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.publish: dict[str, Any] = {"finished": 0, "chunks": 0, "workers": "[]"}

    def process_result(self, result: ResultData, parameters: Any) -> None:
        chunk = result.payload
        with self.lock:
            self.chunks.setdefault(chunk["worker"], []).append(chunk)
            self.count += 1

    def timer(self, parameters: Any) -> float:
        self.publish["chunks"] = self.count  # progress, read by the overload test
        return 0.2

    def finish(self, parameters: Any) -> None:
        with self.lock:
            for worker, chunks in self.chunks.items():
                self.publish[worker] = {
                    key: np.concatenate([c[key] for c in chunks]) for key in ("event", "stream",
                                                                             "id")}
            self.publish["workers"] = json.dumps(sorted(self.chunks))
            self.publish["chunks"] = self.count
        self.publish["finished"] = 1
