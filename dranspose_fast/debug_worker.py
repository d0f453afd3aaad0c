"""The debug worker: a worker without user code that keeps the last events it received.

It joins like any worker (tag ``debug`` unless ``WORKER_TAGS`` says otherwise, so trigger
maps route copies of chosen events to it), completes every event without a result, and
keeps the last ``BUFFER_SIZE`` assembled events in a ring buffer. HTTP (0.2's paths):

* ``GET /api/v1/status`` → ``true``
* ``GET /api/v1/last_events?number=N`` → ``pickle(list[EventData])`` of the last N events,
  oldest first, every frame as ``bytes`` (``application/x.pickle``); read it with
  ``decode_last_events``, which unpickles data only (``helpers.safe_pickle``).

Both only read: a token is asked for only with ``DFAST_REST_AUTH=all`` (docs/security.md).
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

from dranspose_fast.api.guard import protect
from dranspose_fast.event import EventData, StreamData, make_event_data
from dranspose_fast.helpers import safe_pickle
from dranspose_fast.helpers.safe_pickle import AllowList
from dranspose_fast.protocol import StreamName, WorkerTag
from dranspose_fast.runtime.settings import RestSettings, WorkerSettings
from dranspose_fast.worker import Worker

__all__ = [
    "BUFFER_SIZE", "DEBUG_TAG", "DebugWorker", "DebugWorkerSettings", "app", "create_app",
    "decode_last_events", "run",
]

#: Events the ring buffer holds (0.2: 50).
BUFFER_SIZE = 50

DEBUG_TAG = WorkerTag("debug")

#: What an answer of ``last_events`` may hold beside plain data (0.2's names read as ours).
_EVENT_CLASSES = AllowList(
    {f"{module}:{cls.__name__}": cls for module in ("dranspose.event", "dranspose_fast.event")
     for cls in (EventData, StreamData)},
    hint=" in the debug worker's events (EventData and StreamData only)")


def decode_last_events(body: bytes) -> list[EventData]:
    """The events of a ``GET /api/v1/last_events`` answer, unpickled as data only.

    Raises
    ------
    safe_pickle.UnsafePickleError
        if the answer names any class but ``EventData`` and ``StreamData`` (it never runs
        code), or is not a list of events.
    """
    events = safe_pickle.loads(body, _EVENT_CLASSES)
    if type(events) is not list or not all(isinstance(e, EventData) for e in events):
        raise safe_pickle.UnsafePickleError(
            f"the answer is a {type(events).__name__}, not a list of EventData")
    return events


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


def create_app(worker: DebugWorker | None = None, rest: RestSettings | None = None) -> FastAPI:
    """The debug worker's HTTP app; without ``worker`` it runs one built from the environment.

    ``rest`` (default: from the environment) sets the token, origins and body limits.
    """
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
    protect(app, rest)

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
    rest = RestSettings()  # invalid settings: an error before anything starts
    worker = DebugWorker(settings)
    worker.install_signal_handlers()  # see reducer.run: keeps close() running after a signal
    worker.start()
    try:
        uvicorn.run(create_app(worker, rest), host=host, port=port, log_level=log_level)
    finally:
        worker.close()
