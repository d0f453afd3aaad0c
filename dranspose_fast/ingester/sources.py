"""Where an ingester's messages come from: direct upstream sockets and user generators.

* ``UpstreamSource`` is the fast path of the built-in ingesters: the data loop reads the
  stream's upstream socket itself and never decodes images; ``classify`` looks at as little as
  the protocol needs to find the start and end of a series.  Phases: outside a scan everything
  is drained and counted; a series protocol waits for its start message, forwards through its
  end message, then drains until the next mapping.  While a series runs, messages are read only
  when an assignment row needs them, so ZeroMQ queues them (and its high-water mark pushes back
  upstream) instead of Python.
* ``GeneratorSource`` / ``SourceRunner`` run the 0.2 extension API: ``run_source`` async
  generators in an asyncio loop in their own thread, pulled on demand (one item per assigned
  cell, plus one read ahead so the upstream opens when the mapping starts).
* ``Counters``: what happened to every message, one writer thread per instance (and
  ``IngesterCounters``, the published sum).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, fields
from typing import Any, Final, Protocol

import zmq
from pydantic import Field, model_validator

from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.protocol import StreamName, ZmqUrl
from dranspose_fast.runtime.commands import CommandQueue
from dranspose_fast.runtime.settings import IngesterSettings

__all__ = [
    "DATA", "DEFAULT_BUFFER_BYTES", "DEFAULT_FRAME_BYTES", "DONE", "END", "LOST", "MALFORMED",
    "OUTSIDE", "RUNNING", "START", "WAIT_START",
    "Counters", "GeneratorSource", "IngesterCounters", "Source", "SourceOwner", "SourceRunner",
    "UpstreamSettings", "UpstreamSource", "hwm_messages",
]

#: Seconds to wait for user sources to start or stop before giving up (logged).
SOURCE_TIMEOUT = 10.0

#: Upstream messages drained per call outside a series (keeps the loop responsive).
DRAIN_LIMIT: Final[int] = 1000

# Message kinds returned by ``UpstreamSource.classify``.
DATA: Final = 0
START: Final = 1
END: Final = 2
MALFORMED: Final = 3

#: A lost placeholder: a message of zero frames (no upstream message has none), routed by a
#: resumed ingester in place of each message its previous process took (docs/protocol.md,
#: "Ingester resume"); workers drop the events it stands in. Shared: never mutated.
LOST: Final[list[zmq.Frame]] = []

# Phases of an upstream source.
OUTSIDE: Final = 0
WAIT_START: Final = 1
RUNNING: Final = 2
DONE: Final = 3



@dataclass(slots=True)
class Counters:
    """What the ingester did with every message and event: the one declaration of them.

    Each instance has one writer thread; the ingester sums the data loop's and the source
    thread's instances and publishes the sum as ``IngesterCounters`` in its state.
    """

    #: Upstream messages sent to at least one worker.
    forwarded: int = 0
    #: Upstream messages consumed for a ``[]`` cell and sent nowhere.
    discarded_by_map: int = 0
    #: Upstream messages dropped outside a scan (before a series start, after its end).
    discarded_outside_scan: int = 0
    #: Upstream messages that could not be classified, dropped with a log line.
    malformed: int = 0
    #: Upstream messages of a type their protocol does not know, dropped with a log line.
    dropped_unknown_type: int = 0
    #: Events dropped from the queue of a worker that stayed unreachable (logged as errors).
    dropped_for_absent_workers: int = 0
    #: Events (rows with at least one of our streams) handled.
    events_routed: int = 0
    #: Assignment batches or cells that could not be used (wrong shape, free worker slot).
    bad_assignments: int = 0
    #: Messages on the ROUTER that are not a worker hello.
    bad_worker_messages: int = 0
    #: Hellos that claimed a worker name another live peer holds (refused, not rebound).
    refused_worker_names: int = 0
    #: Events written to the scan's dump.
    dumped: int = 0
    #: Dumps that could not be opened, written or closed.
    dump_errors: int = 0
    #: Exceptions raised by user source code (``run_source``, ``software_trigger``).
    source_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class IngesterCounters(Counters):
    """The published counters: ``Counters`` summed, plus the events queued right now."""

    #: Events queued for workers that are not reachable (a gauge, not a total).
    queued_for_absent_workers: int = 0
    #: Handshakes refused on the ROUTER by CURVE: no CURVE, wrong keys, a key not allowed.
    refused_peers: int = 0
    #: The retention window now (gauges): events and bytes sent and not yet released.
    retained_events: int = 0
    retained_bytes: int = 0
    #: Totals: events released, events resent to a worker that took over a lost one's, and
    #: the time routing waited for releases with the window full.
    released_events: int = 0
    resent_events: int = 0
    retention_blocked_seconds: float = 0.0


def log_sparsely(log: logging.Logger, count: int, msg: str, *args: object) -> None:
    """Warn for the first 10 occurrences, then every 1000th (bad input must not flood logs)."""
    if count <= 10 or count % 1000 == 0:
        log.warning(msg + " (%d so far)", *args, count)


class Source(Protocol):
    """Where a stream's messages come from, as the router sees it."""

    stream: StreamName

    def ready(self) -> bool:
        """Whether ``take`` has a message now (never blocks)."""

    def take(self) -> StreamData | None:
        """The next message; ``None`` marks a software-triggered placeholder."""


# === Upstream sources (fast path) ===


#: Default expected size of one upstream message (``UPSTREAM_FRAME_BYTES``): sized for large
#: detector images, so the buffers stay bounded in bytes whatever the detector sends.
DEFAULT_FRAME_BYTES: Final[int] = 1 << 20
#: Default bytes ZeroMQ may buffer per socket and peer (``UPSTREAM_BUFFER_BYTES``).
DEFAULT_BUFFER_BYTES: Final[int] = 256 << 20
#: Bounds of a high-water mark derived from the two (in messages).
MIN_HWM: Final[int] = 16
MAX_HWM: Final[int] = 100_000


def hwm_messages(buffer_bytes: int, frame_bytes: int) -> int:
    """A ZeroMQ high-water mark (messages) that holds about ``buffer_bytes`` of such frames."""
    return max(MIN_HWM, min(MAX_HWM, buffer_bytes // max(1, frame_bytes)))


class UpstreamSettings(IngesterSettings):
    """Settings of an ingester that reads ZeroMQ upstreams (``UPSTREAM_URL``, ``UPSTREAM_URLS``).

    ``upstream_urls`` (JSON ``{stream: url}``) gives each stream its own upstream; streams not
    listed use ``upstream_url``.  ``upstream_buffer_bytes`` / ``upstream_frame_bytes`` size the
    receive high-water mark of each upstream socket and the send high-water mark towards each
    worker: ZeroMQ buffers about that many bytes, then pushes back to the detector (nothing
    is dropped).  Defaults: 256 MiB of 1 MiB frames = 256 messages.
    """

    upstream_url: ZmqUrl | None = None
    upstream_urls: dict[StreamName, ZmqUrl] = {}
    upstream_frame_bytes: int = Field(DEFAULT_FRAME_BYTES, gt=0)
    upstream_buffer_bytes: int = Field(DEFAULT_BUFFER_BYTES, gt=0)

    @property
    def hwm(self) -> int:
        """The high-water mark in messages these settings ask for."""
        return hwm_messages(self.upstream_buffer_bytes, self.upstream_frame_bytes)

    @model_validator(mode="after")
    def _every_stream_has_a_url(self) -> UpstreamSettings:
        missing = [s for s in self.ingester_streams
                   if s not in self.upstream_urls and self.upstream_url is None]
        if missing:
            raise ValueError(f"streams {missing} have no upstream: set upstream_url "
                             "(UPSTREAM_URL) or upstream_urls (UPSTREAM_URLS)")
        return self

    def url_of(self, stream: StreamName) -> str:
        return str(self.upstream_urls.get(stream) or self.upstream_url)




class UpstreamSource:
    """One stream's upstream ZeroMQ socket, read by the data loop itself.

    Received messages wait in ``msgs`` from index ``head`` on: ``take`` hands out one at a
    time (the generic router), the compiled router consumes many and calls ``consumed``.
    Subclasses set ``typ`` and ``series`` and override ``classify``.
    """

    typ: str = "multipart"
    #: True: discard until a START message, forward through the END message, then discard.
    series: bool = False

    def __init__(
        self,
        ctx: zmq.Context[Any],
        stream: StreamName,
        url: str,
        counters: Counters,
        log: logging.Logger,
        socket_type: int = zmq.PULL,
        subscribe: bytes = b"",
        rcvhwm: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.url = url
        self.counters = counters
        self.log = log
        self.socket_type = socket_type
        self.subscribe = subscribe
        #: ZeroMQ receive high-water mark in messages (``None``: libzmq's default).
        self.rcvhwm = rcvhwm
        self.socket: zmq.Socket[Any] | None = None
        #: Messages received for the scan; ``msgs[head:]`` are not routed yet.
        self.msgs: list[list[zmq.Frame]] = []
        self.head = 0
        self.phase = OUTSIDE
        #: Messages handed to routing this scan (saved in Redis for a resume).
        self.position = 0
        #: Called with the series start message when it arrives (saved for a resume).
        self.on_start: Callable[[UpstreamSource, list[Any]], None] | None = None
        #: Resuming: the position the previous process saved, until the first message comes.
        self.resume_from: int | None = None
        #: Placeholders put in on resume, and whether frame numbers counted them.
        self.skipped = 0
        self.skipped_exact = True

    def classify(self, frames: list[zmq.Frame]) -> int:
        """DATA, START, END or MALFORMED for one upstream message (protocol hook)."""
        return DATA

    def message_index(self, frames: list[zmq.Frame]) -> int | None:
        """Position of a message in its series by the protocol's own numbers, the start
        message being 0 (protocol hook); ``None``: the message carries none."""
        return None

    def open(self) -> None:
        sock = self.ctx.socket(self.socket_type)
        if self.rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        if self.socket_type == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, self.subscribe)
        sock.connect(self.url)
        self.socket = sock
        self.log.info("stream %s: connected to %s", self.stream, self.url)

    def close(self) -> None:
        self._drop_held()
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None
            self.log.info("stream %s: closed upstream %s", self.stream, self.url)

    def begin(self) -> None:
        """A scan starts: forget what an earlier scan left and wait for its data."""
        self._drop_held()
        self.phase = WAIT_START if self.series else RUNNING
        self.position = 0
        self.resume_from = None

    def resume(self, saved_position: int) -> None:
        """Go on with a scan this ingester's previous process was in, past its series start.

        The first message received fixes the position: its frame number if the protocol has
        them, else ``saved_position``; every row before it gets a ``LOST`` placeholder.
        """
        self.begin()
        self.phase = RUNNING
        self.resume_from = saved_position

    def end(self) -> None:
        """The scan ended: drain everything until the next one."""
        self._drop_held()
        self.phase = OUTSIDE

    @property
    def available(self) -> int:
        """Messages received and not routed yet."""
        return len(self.msgs) - self.head

    def wants_poll(self, rows_pending: bool) -> bool:
        """Register in the poller: to drain outside a series, or when a row waits for data."""
        if self.socket is None or self.head < len(self.msgs):
            return False
        return self.phase != RUNNING or rows_pending

    def ready(self) -> bool:
        if self.head == len(self.msgs):
            self.fill(1)
        return self.head < len(self.msgs)

    def take(self) -> StreamData | None:
        if self.head == len(self.msgs):
            raise RuntimeError(f"stream {self.stream}: take() without a ready message")
        frames = self.msgs[self.head]
        self.consumed(self.head + 1)
        return make_stream_data(self.typ, frames)

    def consumed(self, head: int) -> None:
        """Messages before ``head`` are routed: let them go."""
        self.position += head - self.head
        if head >= len(self.msgs):
            self.msgs.clear()
            self.head = 0
        elif head >= 256:  # compact now and then, not per message
            del self.msgs[:head]
            self.head = 0
        else:
            self.head = head

    def fill(self, want: int = 1, limit: int = DRAIN_LIMIT) -> None:
        """Receive until ``want`` messages wait for routing or nothing more is ready.

        Outside a series (and before its start) messages are drained and counted, at most
        ``limit`` per call; inside it only what the assigned rows need is read, so ZeroMQ
        keeps the rest (its high-water mark pushes back upstream).
        """
        if self.resume_from is not None and not self._resume_position():
            return
        self._receive(want, limit)

    def _resume_position(self) -> bool:
        """On resume, put placeholders before the first message received; False: none yet."""
        held = len(self.msgs)
        self._receive(1, DRAIN_LIMIT)
        if len(self.msgs) == held:
            return False
        index = self.message_index(self.msgs[held])
        self.skipped_exact = index is not None
        self.skipped = max(0, index if index is not None else self.resume_from or 0)
        self.msgs[held:held] = [LOST] * self.skipped
        self.resume_from = None
        self.log.warning("stream %s: resumed at message %d of the series (%s); the rows before "
                         "it are marked lost", self.stream, self.skipped,
                         "by its frame number" if self.skipped_exact else
                         "as last saved: the protocol has no frame numbers")
        return True

    def _started(self, frames: list[Any]) -> None:
        self.log.info("stream %s: start of a series", self.stream)
        if self.on_start is not None:
            self.on_start(self, frames)

    def _receive(self, want: int, limit: int) -> None:
        """``fill``'s reading, by the series rules (overridden by ``FramedSource``)."""
        sock = self.socket
        if sock is None:
            return
        counters = self.counters
        msgs = self.msgs
        missing = want - (len(msgs) - self.head)
        drained = 0
        recv = sock.recv_multipart
        classify = self.classify
        while missing > 0 and drained < limit:
            try:
                frames = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            kind = classify(frames)
            phase = self.phase
            if phase == RUNNING:
                if kind == DATA or (kind == END and self.series):
                    msgs.append(frames)
                    missing -= 1
                    if kind == END:
                        self.phase = DONE
                        return  # what follows belongs to no scan: the next fill drains it
                    continue
                if kind == START and self.series:
                    counters.malformed += 1
                    log_sparsely(self.log, counters.malformed,
                                 "stream %s: dropped a start message inside a running series",
                                 self.stream)
                    continue
                if kind != MALFORMED:  # START/END of a protocol without series: data
                    msgs.append(frames)
                    missing -= 1
                    continue
            if kind == MALFORMED:
                counters.malformed += 1
                log_sparsely(self.log, counters.malformed,
                             "stream %s: dropped a malformed upstream message", self.stream)
                continue
            if phase == WAIT_START and kind == START:
                msgs.append(frames)
                missing -= 1
                self.phase = RUNNING
                self._started(frames)
                continue
            drained += 1
            counters.discarded_outside_scan += 1
            self.log.debug("stream %s: discarded a message outside the scan", self.stream)

    def _drop_held(self) -> None:
        n = len(self.msgs) - self.head
        self.msgs.clear()
        self.head = 0
        if n:
            self.counters.discarded_outside_scan += n


# === User sources (the extension API) ===


_PLACEHOLDER = object()


class GeneratorSource:
    """A stream fed by the user's ``run_source`` generator (in the source thread)."""

    def __init__(self, stream: StreamName, commands: CommandQueue[Any]) -> None:
        self.stream = stream
        self.items: deque[Any] = deque()
        #: Woken (no command) when an item arrives: the data loop routes it.
        self.commands = commands
        self.demand: asyncio.Semaphore | None = None

    def ready(self) -> bool:
        return bool(self.items)

    def take(self) -> StreamData | None:
        item = self.items.popleft()
        return None if item is _PLACEHOLDER else item

    def push(self, item: object) -> None:
        self.items.append(item)
        self.commands.wake()


class SourceOwner(Protocol):
    """What a ``SourceRunner`` needs of its ingester: the user's generators and a log."""

    log: logging.Logger

    def run_source(self, stream: StreamName) -> Any: ...

    async def stop_source(self, stream: StreamName) -> None: ...


class SourceRunner:
    """Runs ``run_source`` generators in an asyncio loop in a thread, pulled on demand."""

    def __init__(self, ingester: SourceOwner, name: str, counters: Counters,
                 placeholder: type[Exception]) -> None:
        self.ingester = ingester
        self.name = name
        #: ``IsSoftwareTriggered``: yielded (class or instance) for a software-triggered cell.
        self.placeholder = placeholder
        self.log = ingester.log
        self.counters = counters  # written only by this thread
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.tasks: dict[StreamName, asyncio.Task[None]] = {}
        self.gens: dict[StreamName, AsyncGenerator[Any, None]] = {}
        self.streams: list[StreamName] = []

    def start(
        self, streams: list[StreamName], commands: CommandQueue[Any]
    ) -> dict[StreamName, GeneratorSource]:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(
                target=self.loop.run_forever, name=f"{self.name}-sources",
                daemon=True)
            self.thread.start()
        sources = {s: GeneratorSource(s, commands) for s in streams}
        self._call(self._start(sources), "start")
        return sources

    def grant(self, source: GeneratorSource, n: int) -> None:
        """Let ``source`` produce ``n`` more items."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(_release, source, n)

    def stop(self) -> None:
        if self.loop is not None and self.streams:
            self._call(self._stop(), "stop")

    def close(self) -> None:
        self.stop()
        if self.loop is not None and self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(SOURCE_TIMEOUT)
            if not self.thread.is_alive():
                self.loop.close()
            self.loop = None

    def _call(self, coro: Any, what: str) -> None:
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            future.result(SOURCE_TIMEOUT)
        except Exception:
            self.log.exception("could not %s the user sources", what)

    async def _start(self, sources: dict[StreamName, GeneratorSource]) -> None:
        for stream, source in sources.items():
            self.streams.append(stream)
            source.demand = asyncio.Semaphore(1)  # one read ahead opens the upstream now
            try:
                gen = self.ingester.run_source(stream)
            except Exception:
                self.counters.source_errors += 1
                self.log.exception("run_source(%r) failed", stream)
                continue
            if not hasattr(gen, "__anext__"):
                self.counters.source_errors += 1
                self.log.error("run_source(%r) must be an async generator", stream)
                continue
            self.gens[stream] = gen
            self.tasks[stream] = asyncio.create_task(self._pump(source, gen))

    async def _pump(self, source: GeneratorSource, gen: AsyncGenerator[Any, None]) -> None:
        assert source.demand is not None
        try:
            while True:
                await source.demand.acquire()
                while True:
                    item = await anext(gen)
                    if isinstance(item, StreamData):
                        break
                    if item is self.placeholder or isinstance(item, self.placeholder):
                        item = _PLACEHOLDER
                        break
                    self.counters.malformed += 1
                    self.log.error("run_source(%r) yielded a %s, not StreamData; dropped",
                                   source.stream, type(item).__name__)
                source.push(item)
        except StopAsyncIteration:
            self.log.warning("run_source(%r) ended before the scan did", source.stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.counters.source_errors += 1
            self.log.exception("run_source(%r) raised; the stream has no more data this scan",
                               source.stream)

    async def _stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream, gen in self.gens.items():
            try:
                await gen.aclose()
            except Exception:
                self.log.exception("closing run_source(%r) failed", stream)
        for stream in self.streams:
            try:
                await self.ingester.stop_source(stream)
            except Exception:
                self.counters.source_errors += 1
                self.log.exception("stop_source(%r) failed", stream)
        self.tasks.clear()
        self.gens.clear()
        self.streams.clear()


def _release(source: GeneratorSource, n: int) -> None:
    assert source.demand is not None
    for _ in range(n):
        source.demand.release()
