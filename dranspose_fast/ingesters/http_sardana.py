"""Sardana's recorder posts a scan over HTTP; this ingester forwards it (typ ``sardana``).

``app`` is the FastAPI app of dranspose 0.2's ``http_ingester`` command
(``dranspose-fast http_ingester -c dranspose_fast.ingesters.http_sardana:app -n NAME``):
POST ``/v1/data_desc``, ``/v1/record_data`` and ``/v1/record_end`` take the pydantic models of
``dranspose_fast.data.sardana`` (a bad body is answered 422 naming the field);
``/v1/custom_data`` is accepted and ignored.  Its lifespan starts an ``HttpSardanaIngester``
from the environment (``INGESTER_STREAMS``, ``INGESTER_URL``, ``REDIS_URL``, ...) and closes
it at shutdown; every startup builds a fresh one.

Events follow 0.2's rules: per scan the stream waits for a ``DataDescription`` (earlier posts
are dropped), forwards it and each ``RecordData`` through the ``RecordEnd``, then drops posts
until the next scan.  Each message is re-serialised as one JSON frame.

Threads: HTTP handlers run in uvicorn's event loop, ``run_source`` in the ingester's source
loop (``dranspose_fast.ingester.sources.SourceRunner``).  A scan's queue is created in the
source loop when ``run_source`` is called, before the ingester reports the mapping as taken,
so a post that follows the controller's answer is never lost; posts cross over with
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar

import anyio
from fastapi import Body, FastAPI

from dranspose_fast.data.sardana import (
    SardanaDataDescription,
    SardanaPacketType,
    SardanaRecordData,
    SardanaRecordEnd,
)
from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.ingester import Ingester, IngesterCounters
from dranspose_fast.protocol import StreamName
from dranspose_fast.runtime.settings import IngesterSettings

__all__ = [
    "HttpSardanaIngester", "HttpSardanaSettings", "app", "lifespan", "post_custom_data",
    "post_data_desc", "post_record_data", "post_record_end", "sardana_ingester",
]

logger = logging.getLogger(__name__)

#: ``StreamData.typ`` of the forwarded messages (dranspose 0.2's).
_TYP = "sardana"

_Inbox = tuple[asyncio.AbstractEventLoop, "asyncio.Queue[SardanaPacketType]"]


class HttpSardanaSettings(IngesterSettings):
    """The ingester settings (``INGESTER_STREAMS``, ``INGESTER_URL``, ...); no upstream URL."""


class HttpSardanaIngester(Ingester):
    """Forwards the Sardana packets posted to ``receive`` to the workers, scan by scan."""

    settings_class: ClassVar[type[IngesterSettings]] = HttpSardanaSettings

    def __init__(self, settings: HttpSardanaSettings | None = None) -> None:
        settings = settings if settings is not None else HttpSardanaSettings()
        self._http_sardana_settings = settings
        super().__init__(settings=settings)
        #: One queue per stream of the running scan, owned by the source loop.
        self._inboxes: dict[StreamName, _Inbox] = {}
        self._inbox_lock = threading.Lock()
        #: Posts that arrived with no scan running (written by the HTTP loop only).
        self._dropped_without_scan = 0

    def run(self) -> None:
        """Serve without HTTP (``dranspose-fast ingester -c HttpSardanaIngester``, as in 0.2)."""
        self.log.warning("%s receives posts only inside its HTTP app: run `dranspose-fast "
                         "http_ingester -c %s:app -n STREAM`", type(self).__name__, __name__)
        super().run()

    # === the HTTP side ===

    async def receive(self, paket: SardanaPacketType) -> None:
        """Hand one posted packet to every stream of the running scan (any thread)."""
        self.deliver(paket)

    def deliver(self, packet: SardanaPacketType) -> None:
        """Thread-safe ``receive``: queue ``packet`` in the source loop, or drop it."""
        with self._inbox_lock:
            inboxes = list(self._inboxes.values())
        delivered = False
        for loop, inbox in inboxes:
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, packet)
                delivered = True
            except RuntimeError:  # the source loop closed meanwhile
                pass
        if not delivered:
            self._dropped_without_scan += 1
            self.log.debug("no scan running: dropped a posted %s", packet.type)

    # === the source side (0.2's extension API) ===

    def run_source(self, stream: StreamName) -> AsyncGenerator[StreamData, None]:
        """The scan's queue is made now (in the source loop), its generator reads it."""
        inbox: asyncio.Queue[SardanaPacketType] = asyncio.Queue()
        with self._inbox_lock:
            self._inboxes[stream] = (asyncio.get_running_loop(), inbox)
        return self._packets(stream, inbox)

    async def _packets(
        self, stream: StreamName, inbox: asyncio.Queue[SardanaPacketType]
    ) -> AsyncGenerator[StreamData, None]:
        counters = self._source_counters  # this runs in the source thread, its only writer
        while True:
            packet = await inbox.get()
            if isinstance(packet, SardanaDataDescription):
                self.log.info("stream %s: start of scan %s", stream, packet.serialno)
                yield _frame(packet)
                break
            counters.discarded_outside_scan += 1
            self.log.debug("stream %s: dropped a %s before the DataDescription",
                           stream, packet.type)
        while True:
            packet = await inbox.get()
            yield _frame(packet)
            if isinstance(packet, SardanaRecordEnd):
                self.log.info("stream %s: end of the scan", stream)
                break
        while True:  # until the next scan restarts the source
            await inbox.get()
            counters.discarded_outside_scan += 1

    async def stop_source(self, stream: StreamName) -> None:
        with self._inbox_lock:
            entry = self._inboxes.pop(stream, None)
        if entry is not None:
            self._source_counters.discarded_outside_scan += entry[1].qsize()

    def counter_values(self) -> IngesterCounters:
        values = super().counter_values()
        values.discarded_outside_scan += self._dropped_without_scan
        return values


def _frame(packet: SardanaPacketType) -> StreamData:
    return make_stream_data(_TYP, [packet.model_dump_json().encode("utf8")])


# === the HTTP app ===

#: The ingester the running app feeds (``None`` outside the app's lifespan).
sardana_ingester: HttpSardanaIngester | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start a fresh ingester from the environment; close it at shutdown."""
    global sardana_ingester
    ingester = HttpSardanaIngester()
    await anyio.to_thread.run_sync(ingester.start)
    sardana_ingester = ingester
    try:
        yield
    finally:
        if sardana_ingester is ingester:
            sardana_ingester = None
        await anyio.to_thread.run_sync(ingester.close)


app = FastAPI(title="dranspose-fast Sardana ingester", lifespan=lifespan)


async def _receive(packet: SardanaPacketType) -> None:
    ingester = sardana_ingester
    if ingester is None:
        logger.warning("no ingester running: dropped a posted %s", packet.type)
        return
    await ingester.receive(packet)


@app.post("/v1/data_desc")
async def post_data_desc(data: Annotated[SardanaDataDescription, Body()]) -> None:
    """Start of a scan."""
    await _receive(data)
    logger.info("data_desc received: scan %s %r", data.serialno, data.title)


@app.post("/v1/record_data")
async def post_record_data(data: Annotated[SardanaRecordData, Body()]) -> None:
    """One scan point."""
    await _receive(data)


@app.post("/v1/custom_data")
async def post_custom_data(payload: Annotated[dict[str, Any], Body()]) -> None:
    """Accepted and ignored, as in dranspose 0.2."""
    logger.debug("ignored custom_data %s", payload)


@app.post("/v1/record_end")
async def post_record_end(data: Annotated[SardanaRecordEnd, Body()]) -> None:
    """End of a scan."""
    await _receive(data)
    logger.info("record_end received")
