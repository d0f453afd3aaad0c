"""The debug worker: a worker without user code that keeps the last events it received.

It joins like any worker (tag ``debug`` unless ``WORKER_TAGS`` says otherwise, so trigger
maps route copies of chosen events to it), completes every event without a result, and
keeps the last ``BUFFER_SIZE`` assembled events in a ring buffer. HTTP (0.2's paths):

* ``GET /api/v1/status`` → ``true``
* ``GET /api/v1/last_events?number=N`` → ``pickle(list[EventData])`` of the last N events,
  oldest first, every frame as ``bytes`` (``application/x.pickle``).
"""

from __future__ import annotations

import pickle
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

from dranspose_fast.event import EventData, make_event_data
from dranspose_fast.protocol import StreamName, WorkerTag
from dranspose_fast.runtime.settings import WorkerSettings
from dranspose_fast.worker import Worker

__all__ = [
    "BUFFER_SIZE", "DEBUG_TAG", "DebugWorker", "DebugWorkerSettings", "app", "create_app", "run",
]

#: Events the ring buffer holds (0.2: 50).
BUFFER_SIZE = 50

DEBUG_TAG = WorkerTag("debug")


class DebugWorkerSettings(WorkerSettings):
    """``WorkerSettings`` whose tags default to ``{"debug"}``."""

    worker_tags: set[WorkerTag] = {DEBUG_TAG}


class DebugWorker(Worker):
    """A worker that records events instead of running user code."""

    def __init__(
        self, settings: WorkerSettings | None = None, buffer_size: int = BUFFER_SIZE
    ) -> None:
        self.buffer: deque[EventData] = deque(maxlen=buffer_size)
        self._buffer_lock = threading.Lock()  # the HTTP thread reads while the data thread appends
        super().__init__(settings if settings is not None else DebugWorkerSettings())

    def _load_class(self) -> type:
        owner = self

        class Recorder:
            def process_event(self, event: EventData, parameters: Any) -> None:
                owner.record(event)

        return Recorder

    def record(self, event: EventData) -> None:
        with self._buffer_lock:
            self.buffer.append(event)

    def last_events(self, number: int) -> list[EventData]:
        """The last ``number`` events, oldest first, with every frame copied to ``bytes``."""
        if number <= 0:
            return []
        with self._buffer_lock:
            events = list(self.buffer)[-number:]
        return [
            make_event_data(
                e.event_number,
                {StreamName(name): data.get_bytes() for name, data in e.streams.items()},
            )
            for e in events
        ]


def create_app(worker: DebugWorker | None = None) -> FastAPI:
    """The debug worker's HTTP app; without ``worker`` it runs one built from the environment."""
    holder: dict[str, DebugWorker] = {}
    if worker is not None:
        holder["w"] = worker

    owned = "w" not in holder

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Every startup of an app that owns its service builds a fresh one (the last one was
        # closed by the shutdown before), so a second server on the same app runs one too.
        if owned:
            holder["w"] = DebugWorker()
            holder["w"].start()
        try:
            yield
        finally:
            if owned:
                holder.pop("w").close()

    app = FastAPI(title="dranspose-fast debug worker", lifespan=lifespan)

    @app.get("/api/v1/status")
    async def status() -> bool:
        return True

    @app.get("/api/v1/last_events")
    async def last_events(number: int = 1) -> Response:
        current = holder.get("w")
        events = current.last_events(number) if current is not None else []
        return Response(pickle.dumps(events), media_type="application/x.pickle")

    return app


app = create_app()


def run(host: str = "127.0.0.1", port: int = 5000, settings: WorkerSettings | None = None,
        log_level: str = "info") -> None:
    """Run a debug worker and serve its HTTP app with uvicorn until SIGTERM/SIGINT."""
    worker = DebugWorker(settings)
    worker.install_signal_handlers()  # see reducer.run: keeps close() running after a signal
    worker.start()
    try:
        uvicorn.run(create_app(worker), host=host, port=port, log_level=log_level)
    finally:
        worker.close()
