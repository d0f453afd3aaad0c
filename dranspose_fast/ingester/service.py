"""The ingester service: upstream streams in, packed event batches out to the workers.

An ingester owns one or more streams.  For every event of a scan the controller's assignment
batches (``dfast:assigned:{uuid}``) say, per stream, which workers get the frame (a bit mask;
0 = consumed and discarded; absent = no frame).  The ingester takes exactly one upstream
message per present cell, in order, and sends each worker one packed batch per round
(``dataplane.encode_events``), zero-copy for large frames.

Threads: the ``Service`` base publishes the config key and follows ``dfast:updates``; one
thread reads the assignment stream (XREAD BLOCK, from entry 0 for each new mapping); the data
loop owns every ZeroMQ socket, and the other threads post it commands (``routing.BeginScan``,
``FinishScan``, ``Assign``) through a ``runtime.commands.CommandQueue``; routing is in
``routing``, the sources (direct upstream sockets, user generators in their own asyncio
thread) in ``sources``.

Extension API (dranspose 0.2 compatible): subclass ``Ingester`` (or a built-in one) and
implement ``async def run_source(self, stream)`` yielding one ``StreamData`` per event in which
the stream appears (or ``IsSoftwareTriggered()`` placeholders), optionally
``async def stop_source(self, stream)`` and ``software_trigger(self)``, an iterator of
``{stream: StreamData}`` dicts whose next item fills the placeholders of each event.
Built-in ingesters return an ``UpstreamSource`` from ``direct_source`` instead: the data loop
then reads the upstream socket itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import redis
import zmq
import zmq.asyncio
from pydantic import Field

from dranspose_fast.dump import DumpWriter
from dranspose_fast.errors import DransposeFastError
from dranspose_fast.event import StreamData
from dranspose_fast.ingester.links import MAX_WORKER_FRAME, WorkerLinks, sum_counters
from dranspose_fast.ingester.resume import ResumePoints
from dranspose_fast.ingester.retention import Retention
from dranspose_fast.ingester.routing import (
    Assign,
    BadAssignment,
    BeginScan,
    Command,
    Control,
    FinishScan,
    ScanState,
    accept,
    route,
)
from dranspose_fast.ingester.sources import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_FRAME_BYTES,
    SOURCE_TIMEOUT,
    Counters,
    GeneratorSource,
    IngesterCounters,
    Source,
    SourceRunner,
    UpstreamSettings,
    UpstreamSource,
    hwm_messages,
)
from dranspose_fast.ingester.takeover import apply_control
from dranspose_fast.protocol import (
    ConnectedWorker,
    IngesterState,
    ParameterName,
    StreamName,
    WorkerName,
)
from dranspose_fast.runtime.assignments import AssignmentReader
from dranspose_fast.runtime.commands import CommandQueue
from dranspose_fast.runtime.curve import CurveServer, server_keys
from dranspose_fast.runtime.local_hop import LocalHop, boot_id
from dranspose_fast.runtime.metrics import ComponentMetrics, MetricsServer
from dranspose_fast.runtime.redis_messages import (
    AssignmentBatch,
    ControllerUpdate,
    Joined,
    Keys,
    decode_entry,
)
from dranspose_fast.runtime.service import Entry, Service
from dranspose_fast.runtime.settings import IngesterSettings

__all__ = [
    "DEFAULT_BUFFER_BYTES", "DEFAULT_FRAME_BYTES", "Ingester",
    "IngesterCounters", "IngesterSettings", "IngesterStatus", "IsSoftwareTriggered",
    "UpstreamSettings", "UpstreamSource", "hwm_messages",
]


class IsSoftwareTriggered(DransposeFastError):
    """Yield this (class or instance) from ``run_source`` for a software-triggered stream."""


class IngesterStatus(IngesterState):
    """``IngesterState`` plus the counters; readers that expect the 0.2 state ignore them."""

    counters: IngesterCounters = Field(default_factory=IngesterCounters)


# === The service ===


class Ingester(Service):
    """Base of every ingester; see the module docstring for the extension API.

    Parameters
    ----------
    settings : IngesterSettings, optional
        Read from the environment (``INGESTER_STREAMS``, ``INGESTER_URL``, ...) when omitted.
    """

    role = "ingester"
    settings_class: ClassVar[type[IngesterSettings]] = IngesterSettings

    def __init__(self, settings: IngesterSettings | None = None) -> None:
        if settings is None:
            settings = self.settings_class()
        if not settings.ingester_streams:
            raise ValueError("an ingester needs at least one stream (INGESTER_STREAMS)")
        self._ingester_settings = settings
        state = IngesterStatus(
            name=settings.ingester_name, url=settings.ingester_url,
            streams=list(settings.ingester_streams),
            retention_events=settings.retention_events,
        )
        super().__init__(state, settings)
        self.state: IngesterStatus
        self._logger = self.log  # the 0.2 attribute name, used by user ingesters
        self.streams = list(settings.ingester_streams)
        self.active_streams: list[StreamName] = []
        self.counters = Counters()  # written by the data loop only
        self._source_counters = Counters()  # written by the source thread only
        #: CURVE keys of the ROUTER (``None``: off); read now so bad keys stop the start.
        self._curve_keys = server_keys(settings)
        self._curve: CurveServer | None = None
        self._local_hop: LocalHop | None = None
        # two libzmq I/O threads: the upstream's frames come in on one while the workers'
        # batches go out (and are encrypted) on the other (bench/README.md, "CURVE end to end")
        self.zmq_context: zmq.Context[Any] = zmq.Context(
            io_threads=settings.ingester_io_threads)
        #: For user ``run_source`` code (0.2's ``self.ctx``): sockets used in the source loop.
        self.ctx = zmq.asyncio.Context()
        self._commands: CommandQueue[Command] = CommandQueue(self.zmq_context, "ingester")
        self._router: zmq.Socket[Any] | None = None
        self._links: WorkerLinks | None = None
        self._upstreams: dict[StreamName, UpstreamSource] = {}
        self._runner = SourceRunner(
            self, self.state.name, self._source_counters, IsSoftwareTriggered)
        self._scan: ScanState | None = None
        self._resume = ResumePoints(self.redis, self.log)
        self._assignments = AssignmentReader(self, 64, self._on_assignments)
        self._loop_thread: threading.Thread | None = None
        self._rate_mark = (time.monotonic(), 0)
        self._cleaned = False
        #: ``/metrics`` (docs/metrics.md), served on ``metrics_port`` while the ingester runs.
        self.metrics = ComponentMetrics("ingester", self.state.name, self.metric_values)
        self.metrics_server = MetricsServer(
            self.metrics, settings.metrics_host, settings.metrics_port)

    # === extension API ===

    def direct_source(self, stream: StreamName) -> UpstreamSource | None:
        """An upstream the data loop reads itself (built-ins); ``None``: use ``run_source``."""
        return None

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        """Yield one ``StreamData`` per event in which ``stream`` appears (override this)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no source for stream {stream!r}: implement run_source")
        yield  # pragma: no cover (makes this an async generator)

    async def stop_source(self, stream: StreamName) -> None:
        """Called when a scan's ``run_source`` generator is closed; close sockets here."""

    # === lifecycle ===

    def start(self) -> None:
        """Bind the ROUTER and start every thread; returns at once."""
        url = self._ingester_settings.ingester_url
        # where it listens (INGESTER_BIND) apart from what workers are told (INGESTER_URL)
        address = self._ingester_settings.bind_address()
        router = self._new_router()
        if self._curve_keys is not None:
            self._curve = CurveServer(self.zmq_context, self._curve_keys, self.state.name)
            self._curve.secure(router)
        router.setsockopt(zmq.TCP_KEEPALIVE, 1)
        router.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 300)
        router.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 300)
        try:
            router.bind(address)
        except zmq.ZMQError as exc:
            router.close(linger=0)
            if self._curve is not None:
                self._curve.close()
                self._curve = None
            raise OSError(f"ingester {self.state.name}: cannot bind {address}: {exc}") from exc
        self._router = router
        # a second connection may claim a live worker's name only as WorkerLinks allows
        self._links = WorkerLinks(router, self.counters, self.log,
                                  takeover_after=4 * self.settings.config_interval,
                                  authenticated=self._curve is not None)
        kept = self._ingester_settings
        self._links.retention = Retention(kept.retention_events, kept.retention_bytes)
        self._open_local_hop(self._links)
        self._loop_thread = threading.Thread(
            target=self._data_loop, name=f"{self.state.name}-data", daemon=True)
        self._loop_thread.start()
        self.start_background()
        self._spawn(self._assignments.run, "assignments")
        self.log.info("ingester %s serving streams %s on %s (bound to %s)", self.state.name,
                      self.streams, url, address)
        self.metrics_server.start()

    def _new_router(self) -> zmq.Socket[Any]:
        """A ROUTER towards workers: mandatory routing, hellos only in, the byte-sized HWM."""
        router: zmq.Socket[Any] = self.zmq_context.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_WORKER_FRAME)
        router.setsockopt(zmq.SNDHWM, self._router_hwm())
        return router

    def _open_local_hop(self, links: WorkerLinks) -> None:
        """The ROUTER for workers on this host (``runtime.local_hop``); without it, TCP only."""
        host = boot_id()
        if not self._ingester_settings.local_hop or host is None:
            return
        sock = self._new_router()
        try:
            hop = LocalHop()
            sock.bind(hop.url)
        except (OSError, zmq.ZMQError) as exc:
            sock.close(linger=0)
            self.log.warning("ingester %s: no local hop for workers on this host (%s)",
                             self.state.name, exc)
            return
        self._local_hop, links.local = hop, sock
        with self._state_lock:
            self.state.local_url, self.state.host_id = hop.url, host

    def _router_hwm(self) -> int:
        cfg = self._ingester_settings
        if isinstance(cfg, UpstreamSettings):
            return cfg.hwm
        return hwm_messages(DEFAULT_BUFFER_BYTES, DEFAULT_FRAME_BYTES)

    def close(self) -> None:
        """Stop the threads, close dumps and sockets, delete the config key (idempotent).

        ``run()`` (the ``Service``'s: ``start()``, serve until SIGTERM/SIGINT or
        ``stop_event``, then this) is dranspose 0.2's blocking entry point.
        """
        if not self.begin_close():
            return
        self._assignments.wake()
        self._commands.wake()
        self.metrics_server.stop()
        if self._loop_thread is not None:
            self._loop_thread.join(SOURCE_TIMEOUT + 5)
        self._cleanup()
        super().close()

    # === control (updates and assignment threads) ===

    def on_update(self, update: ControllerUpdate, previous: ControllerUpdate | None) -> None:
        uid = update.mapping_uuid
        if uid is None:
            return
        if uid != self._assignments.target:
            self._commands.post(BeginScan(update))  # queued before any Assign of the scan
            self._assignments.follow(uid)
        if update.finished:
            self._commands.post(FinishScan(uid, update.reason or "finished"))

    def on_redis_restart(self) -> None:
        if self._assignments.target is not None:
            self._commands.post(FinishScan(self._assignments.target, "redis restarted"))

    def _on_assignments(self, uid: uuid.UUID, entries: list[Entry]) -> None:
        for entry_id, fields in entries:
            try:
                entry = decode_entry(fields)
            except (KeyError, ValueError) as exc:
                key = Keys.assigned(uid)
                self._commands.post(BadAssignment(f"assignment entry {entry_id!r} of {key}: {exc}"))
                continue
            if isinstance(entry, AssignmentBatch):
                self._commands.post(Assign(uid, entry))
            elif not isinstance(entry, Joined):
                self._commands.post(Control(uid, entry))

    # === data loop ===

    def _data_loop(self) -> None:
        assert self._router is not None and self._links is not None
        router, links, commands = self._router, self._links, self._commands.socket
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        if links.local is not None:
            poller.register(links.local, zmq.POLLIN)
        poller.register(commands, zmq.POLLIN)
        polled: dict[zmq.Socket[Any], UpstreamSource] = {}
        timeout = 0
        next_chores = 0.0
        while not self.stop_event.is_set():
            try:
                self._sync_poller(poller, polled)
                for sock, _event in poller.poll(timeout):
                    if sock is router or sock is links.local:
                        links.receive_hellos(self._on_hello, sock)
                    elif sock is commands:
                        self._run_commands()
                    elif sock in polled:
                        polled[sock].fill()
                scan = self._scan
                routed = 0
                if scan is not None and scan.pending and not links.retention.full():
                    routed = route(scan, links, self.counters, self.log)
                if links.queues:
                    links.flush_all()
                now = time.monotonic()
                if now >= next_chores:
                    if scan is not None and not scan.finished:
                        self._resume.save(self._upstreams.values())
                    self._prune_workers()
                    next_chores = now + 0.25
                timeout = 0 if routed else (10 if links.queues else 100)
            except Exception:
                self.log.exception("ingester data loop error; continuing")
                self.stop_event.wait(0.05)

    def _sync_poller(
        self, poller: zmq.Poller, polled: dict[zmq.Socket[Any], UpstreamSource]
    ) -> None:
        rows = self._scan is not None and bool(self._scan.pending)
        if rows and self._links is not None and self._links.retention.full():
            rows = False  # back-pressure: the upstream queues until releases come
        wanted = {src.socket: src for src in self._upstreams.values()
                  if src.socket is not None and src.wants_poll(rows)}
        for sock in [s for s in polled if s not in wanted]:
            poller.unregister(sock)
            del polled[sock]
        for sock, src in wanted.items():
            if sock not in polled:
                poller.register(sock, zmq.POLLIN)
                polled[sock] = src

    def _run_commands(self) -> None:
        """Every command posted since the last call: the one dispatch of the data loop."""
        for command in self._commands.drain():
            match command:
                case Assign(uid, batch):
                    self._accept(uid, batch)
                case BeginScan(update):
                    self._begin_scan(update)
                case FinishScan(uid, reason):
                    self._finish_scan(uid, reason)
                case Control(uid, entry):
                    scan = self._scan
                    if scan is not None and scan.uuid == uid and self._links is not None:
                        apply_control(scan, self._links, entry, self.log)
                case BadAssignment(message):
                    self.counters.bad_assignments += 1
                    self.log.error("ignored %s", message)

    def _begin_scan(self, update: ControllerUpdate) -> None:
        assert update.mapping_uuid is not None
        self._end_scan(f"mapping {update.mapping_uuid} replaced it")
        columns = list(update.streams or update.active_streams)
        mine = [s for s in columns if s in self.streams]
        for stream in [s for s in self._upstreams if s not in mine]:
            self._upstreams.pop(stream).close()
        sources: list[tuple[int, Source]] = []
        generated: list[tuple[int, StreamName]] = []
        for col, stream in enumerate(columns):
            if stream not in self.streams:
                continue
            src = self._upstreams.get(stream) or self._open_direct(stream)
            if src is None:
                generated.append((col, stream))
                continue
            if update.finished:
                src.end()
            else:
                src.begin()
            sources.append((col, src))
        if generated and not update.finished:
            gens = self._runner.start([s for _c, s in generated], self._commands)
            sources.extend((col, gens[s]) for col, s in generated)
        if not update.finished:
            self._resume.join(update.mapping_uuid, [s for _c, s in sources
                                                    if isinstance(s, UpstreamSource)],
                              [s for _c, s in generated])
        sources.sort(key=lambda cs: cs[0])
        scan = ScanState(update.mapping_uuid, columns, sources)
        scan.finished = update.finished
        if not update.finished:
            scan.dumper = self._open_dump(update.mapping_uuid)
            trigger = getattr(self, "software_trigger", None)
            if callable(trigger):
                try:
                    scan.software_trigger = iter(trigger())
                except Exception:
                    self.counters.source_errors += 1
                    self.log.exception("software_trigger() failed")
        self._scan = scan
        self.active_streams = mine
        with self._state_lock:
            self.state.mapping_uuid = update.mapping_uuid
        self.log.info("scan %s: streams %s of %s", update.mapping_uuid, mine, columns)
        self._publish_quietly()  # the controller waits for our mapping_uuid

    def _open_direct(self, stream: StreamName) -> UpstreamSource | None:
        src = self.direct_source(stream)
        if src is None:
            return None
        try:
            src.open()
        except zmq.ZMQError as exc:
            self.counters.source_errors += 1
            self.log.error("stream %s: cannot connect to %s: %s", stream, src.url, exc)
            return None
        self._upstreams[stream] = src
        return src

    def _open_dump(self, mapping_uuid: uuid.UUID) -> DumpWriter | None:
        path = self.dump_path(mapping_uuid)
        if path is None:
            return None
        if not self._ingester_settings.dump_path:  # a dump_prefix came through Redis
            problem = self._ingester_settings.dump_path_problem(path)
            if problem is not None:  # the controller checks it too; Redis is not trusted
                self.counters.dump_errors += 1
                self.log.error("not dumping scan %s: %s", mapping_uuid, problem)
                return None
        try:
            writer = DumpWriter(path)
        except OSError as exc:
            self.counters.dump_errors += 1
            self.log.error("cannot open dump %s: %s", path, exc)
            return None
        self.log.info("dumping scan %s to %s", mapping_uuid, path)
        return writer

    def dump_path(self, mapping_uuid: uuid.UUID) -> str | None:
        """``dump_path`` verbatim, else ``{dump_prefix}{name}-{uuid}.cbors``, else ``None``."""
        if self._ingester_settings.dump_path:
            return str(self._ingester_settings.dump_path)
        prefix = self.parameters.get(ParameterName("dump_prefix"))
        if prefix is not None and prefix.data:
            text = prefix.data.decode("utf8", "replace")
            return f"{text}{self.state.name}-{mapping_uuid}.cbors"
        return None

    def _end_scan(self, reason: str) -> None:
        scan = self._scan
        if scan is None:
            return
        self._close_scan(scan, reason)
        self._runner.stop()
        for _col, src in scan.sources:
            if isinstance(src, GeneratorSource) and src.items:
                self.counters.discarded_outside_scan += len(src.items)
                src.items.clear()
        if self._links is not None:
            if self._links.queues:
                self._links.drop_all(reason)
            self._links.retention.clear()
        self._scan = None

    def _finish_scan(self, mapping_uuid: uuid.UUID, reason: str) -> None:
        scan = self._scan
        if scan is None or scan.uuid != mapping_uuid or scan.finished:
            return
        scan.finished = True
        self._close_scan(scan, reason)
        if self._links is not None:
            self._links.retention.clear()  # a finished scan's events are all released
        self.log.info("scan %s finished (%s)", mapping_uuid, reason)

    def _close_scan(self, scan: ScanState, reason: str) -> None:
        unrouted = sum(pb.remaining() for pb in scan.pending)
        if unrouted:
            self.log.warning("scan %s: %d assigned events were never routed (%s)",
                             scan.uuid, unrouted, reason)
        scan.pending.clear()
        if scan.dumper is not None:
            try:
                scan.dumper.close()
            except OSError as exc:
                self.counters.dump_errors += 1
                self.log.error("closing dump %s failed: %s", scan.dumper.path, exc)
            scan.dumper = None
        for src in self._upstreams.values():
            src.end()

    def _accept(self, mapping_uuid: uuid.UUID, batch: AssignmentBatch) -> None:
        scan = self._scan
        if scan is None or scan.uuid != mapping_uuid or scan.finished or not scan.sources:
            return
        pb = accept(scan, batch, self.counters, self.log)
        if pb is None:
            return
        for k, (_col, src) in enumerate(scan.sources):
            if isinstance(src, GeneratorSource):
                n = pb.cells(k)
                if n:
                    self._runner.grant(src, n)
        scan.pending.append(pb)

    def _on_hello(self, name: str, service_uuid: uuid.UUID) -> None:
        with self._state_lock:
            workers = self.state.connected_workers
            new = service_uuid not in workers
            workers[service_uuid] = ConnectedWorker(
                name=WorkerName(name), service_uuid=service_uuid, last_seen=time.time())
        if new:
            self.log.info("worker %s (%s) connected", name, service_uuid)
            self._publish_quietly()

    def _prune_workers(self) -> None:
        horizon = time.time() - 4 * self.settings.config_interval
        with self._state_lock:
            workers = self.state.connected_workers
            gone = [uid for uid, cw in workers.items() if cw.last_seen < horizon]
            for uid in gone:
                self.log.info("worker %s (%s) stopped saying hello", workers[uid].name, uid)
                del workers[uid]

    def _publish_quietly(self) -> None:
        try:
            self.publish_config()
        except redis.RedisError as exc:
            self.log.warning("publishing the config failed: %s", exc)

    # === state ===

    @property
    def upstream_streams(self) -> list[StreamName]:
        """Streams whose upstream socket the data loop has open (the fast path)."""
        return [s for s, src in list(self._upstreams.items()) if src.socket is not None]

    def counter_values(self) -> IngesterCounters:
        """The counters now (data loop and source thread summed)."""
        refused = self._curve.refused if self._curve is not None else 0
        return sum_counters(self.counters, self._source_counters, self._links, refused)

    def metric_values(self) -> dict[str, float]:
        """The counters and queue depths ``/metrics`` exports (read from any thread)."""
        values: dict[str, float] = dict(self.counter_values().as_dict())
        scan = self._scan
        values["events_pending"] = sum(pb.remaining() for pb in list(scan.pending)) \
            if scan is not None else 0
        values["frames_buffered"] = sum(src.available for src in list(self._upstreams.values()))
        values["connected_workers"] = len(self.state.connected_workers)
        return values

    def publish_config(self) -> None:
        counters = self.counter_values()
        now = time.monotonic()
        mark_time, mark_events = self._rate_mark
        with self._state_lock:
            self.state.counters = counters
            self.state.resumed = self._resume.report()
            self.state.processed_events = counters.events_routed
            if now - mark_time >= 1.0:
                self.state.event_rate = (counters.events_routed - mark_events) / (now - mark_time)
                self._rate_mark = (now, counters.events_routed)
        super().publish_config()

    def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        self._end_scan("the ingester is closing")
        self._runner.close()
        for src in self._upstreams.values():
            src.close()
        self._upstreams.clear()
        if self._router is not None:
            self._router.close(linger=0)
        if self._links is not None and self._links.local is not None:
            self._links.local.close(linger=0)
        if self._local_hop is not None:
            self._local_hop.close()
        if self._curve is not None:
            self._curve.close()
        self._commands.close()
        self.ctx.destroy(linger=0)
        self.zmq_context.destroy(linger=0)
        self.log.info("ingester %s closed", self.state.name)
