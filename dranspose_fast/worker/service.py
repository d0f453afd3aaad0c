"""The networked worker: partial events from ingesters → ``process_event`` → results to the reducer.

Threads (no asyncio): the **data thread** owns every ZeroMQ socket (a DEALER per ingester,
the PUSH to the reducer, its ``CommandQueue``) and does all per-event work: assembly, user
code, packing results, credits. The *discovery* thread reads ingester and reducer configs;
the *assignments* thread follows ``dfast:assigned:{uuid}`` from entry 0 and posts commands
(``parts.command_for``), so only the data thread touches scan state and no lock is taken
per event. An event is complete when it holds as many streams as the assignment gives this
worker; data may arrive before or after its assignment.

Scan changes: the data thread ends the old scan, drains the DEALERs, builds a fresh user
instance (``context`` persists) and grants its first credits only once every known ingester
reports the new ``mapping_uuid`` (or after ``config_ttl``); batches received before are the
old scan's leftovers (``dropped_old_scan``), or for a process that joins a running scan its
predecessor's, which the controller rebinds (``batches_before_join``). Credits:
``credit_window`` first, then the events processed, in steps of ``credit_window/4``, after
``CREDIT_IDLE`` idle or ``CREDIT_MAX_AGE`` at the latest, each with the done-marks that
release retained frames (``worker.takeover``, which also holds a lost worker's events this
one took over).

Results of one loop pass (at most ``RECV_BURST`` batches per socket) leave as one message
when the pass ends, with the scan's mapping uuid (the reducer drops an old scan's).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import msgspec
import redis
import zmq

from dranspose_fast.errors import ClassLoadError, DransposeFastError
from dranspose_fast.event import EventData
from dranspose_fast.helpers.utils import import_class
from dranspose_fast.protocol import IngesterState
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.assignments import AssignmentReader
from dranspose_fast.runtime.commands import CommandQueue
from dranspose_fast.runtime.curve import client_keys
from dranspose_fast.runtime.heap import settle_heap
from dranspose_fast.runtime.memory import replace_parameters, trim_after
from dranspose_fast.runtime.metrics import ComponentMetrics, DutyCycle, MetricsServer, numbers
from dranspose_fast.runtime.redis_messages import (
    ControllerUpdate,
    CreditMessage,
    Keys,
)
from dranspose_fast.runtime.service import Entry, Service
from dranspose_fast.runtime.settings import WorkerSettings
from dranspose_fast.runtime.tick import RedisTickClock
from dranspose_fast.runtime.usercode import (
    Parameters,
    WorkerHost,
    close_user_object,
    describe,
    encode_payload,
)
from dranspose_fast.worker.discovery import Discovery
from dranspose_fast.worker.parts import (
    Assign,
    BeginScan,
    Command,
    EndScan,
    FinishScan,
    IngestersFound,
    JoinedScan,
    NewParameters,
    NoClass,
    ReducerFound,
    ScanState,
    ServiceCounters,
    TakeOver,
    WorkerServiceState,
    commands_for,
)
from dranspose_fast.worker.peers import CreditSender, Dealer, Peers
from dranspose_fast.worker.published import fill_state
from dranspose_fast.worker.takeover import Takeovers

__all__ = ["RedisException", "Worker"]


class RedisException(DransposeFastError):
    """0.2's name (it never raised it either); kept so user code that catches it imports."""

#: Errors a malformed event batch can raise while it is decoded.
DECODE_ERRORS = (ValueError, TypeError, IndexError, msgspec.MsgspecError)
#: Idle time after which processed events are granted back as credits (docs/protocol.md).
CREDIT_IDLE = 0.005
#: Longest time a processed event waits to be granted back while batches keep arriving.
CREDIT_MAX_AGE = 0.02
#: Messages received from one socket before the loop looks at the others.
RECV_BURST = 64


class Worker(Service):
    """A distributed worker (docs/architecture.md, docs/protocol.md)."""

    role = "worker"

    def __init__(self, settings: WorkerSettings | None = None) -> None:
        self.worker_settings = settings if settings is not None else WorkerSettings()
        state = WorkerServiceState(
            name=self.worker_settings.worker_name, tags=self.worker_settings.worker_tags
        )
        super().__init__(state, self.worker_settings)
        self.state: WorkerServiceState
        self.name = str(state.name)
        self.context: dict[Any, Any] = {}
        self._counters = ServiceCounters()
        self.user_class = self._load_class()
        self.describe(list(describe(self.user_class).values()))
        self._credit_batch = max(1, self.worker_settings.credit_window // 4)

        self.ctx: zmq.Context[Any] = zmq.Context()
        self._commands: CommandQueue[Command] = CommandQueue(self.ctx, "worker")
        self._poller = zmq.Poller()
        self._poller.register(self._commands.socket, zmq.POLLIN)

        self.peers = Peers(self.ctx, self.name, state.service_uuid, self._poller,
                           client_keys(self.worker_settings), self.worker_settings.local_hop)
        self.credits = CreditSender(self.redis, self.name)
        self._service = str(state.service_uuid)
        self._takeovers = Takeovers()  # the keys taken over from lost workers (this scan)
        self._scan: ScanState | None = None
        self._last_host: WorkerHost | None = None
        self._last_batch = 0.0
        self._next_ping = 0.0
        self._rate = (time.monotonic(), 0)
        self.duty = DutyCycle()  # the data thread's busy time / wall time (docs/metrics.md)
        metrics = ComponentMetrics("worker", self.name, self.refresh_state)
        self.metrics_server = MetricsServer(metrics, self.settings.metrics_host,
                                            self.settings.metrics_port)

        self._assignments = AssignmentReader(self, 256, self._on_assignments)
        self._discovery = Discovery(self.redis, self.name, self._commands.post, self._counters,
                                    self.settings.config_interval, self.log)
        self._discovered = False  # the first discovery ran (a scan waits for it)
        self._loop_started = False
        self._loop_done = threading.Event()
        self._run_thread: threading.Thread | None = None
        self.log.info("created worker %s with tags %s", self.name, sorted(state.tags))

    # === lifecycle ===

    def _load_class(self) -> type:
        path = self.worker_settings.worker_class
        if not path:
            return NoClass
        try:
            return import_class(path)
        except ClassLoadError as exc:
            self._class_error(str(exc))
            self.log.error("worker %s runs without user code: %s", self.name, exc)
            return NoClass

    def _class_error(self, message: str) -> None:
        with self._state_lock:
            self.state.class_errors += 1
            self.state.class_error = message

    def start_background(self) -> None:
        super().start_background()
        self._spawn(lambda: self._discovery.run(self.stop_event), "discovery")
        self._spawn(self._assignments.run, "assignments")
        self._spawn(lambda: self.credits.run(self.stop_event), "credits")

    def start(self) -> None:
        """Run the worker in background threads; returns at once (``close()`` stops it)."""
        self.metrics_server.start()
        self._run_thread = threading.Thread(
            target=self._serve, name=f"{self.name}-data", daemon=True)
        self._run_thread.start()

    def run(self) -> None:
        """Run the data loop in the calling thread until stopped, then ``close()``.

        On the main thread SIGTERM and SIGINT stop it; elsewhere ``close()`` from another
        thread (or ``stop_event``) does.
        """
        if threading.current_thread() is threading.main_thread():
            self.install_signal_handlers()
        try:
            self.metrics_server.start()
            self._serve()
        finally:
            self.close()

    def _serve(self) -> None:
        """The data thread: start the background threads, run the loop until stopped."""
        self._loop_started = True
        self.start_background()
        settle_heap()
        try:
            self._loop()
        finally:
            self._teardown_sockets()
            self._loop_done.set()

    def close(self) -> None:
        """Stop the threads, call the user's ``close(context)``, delete the config key (once)."""
        if not self.begin_close():
            return
        self._discovery.wake()
        self._assignments.wake()
        self._commands.wake()
        self.metrics_server.stop()
        if self._loop_started:
            self._loop_done.wait(10)
        else:
            self._teardown_sockets()
        if self._run_thread is not None:
            self._run_thread.join(timeout=10)
        self.credits.wake()
        self.credits.flush()
        host = self._scan.host if self._scan is not None else self._last_host
        if host is not None:
            close_user_object(host.instance, self.context, self.log, f"worker {self.name}")
        super().close()
        self._commands.close()
        self.ctx.term()

    # === commands from other threads ===

    def on_update(self, update: ControllerUpdate, previous: ControllerUpdate | None) -> None:
        phash, params = self.current_parameters()
        uid = update.mapping_uuid
        if uid is None:
            return
        if previous is None or previous.mapping_uuid != uid:
            # BeginScan is queued before the assignment reader moves on, so no Assign of
            # the new scan can reach the data thread ahead of it.
            self._commands.post(BeginScan(uid, update.finished, params, phash,
                                          late=previous is None))
            self._assignments.follow(None if update.finished else uid)
            return
        if previous.parameters_version != update.parameters_version:
            self._commands.post(NewParameters(uid, params, phash))
        if update.finished and not previous.finished:
            self._commands.post(FinishScan(uid))

    def on_redis_restart(self) -> None:
        self._commands.post(EndScan())

    # === the data loop ===

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            ready = dict(self._poller.poll(self._timeout()))
            self.duty.begin()
            if self._commands.socket in ready:
                self._run_commands()
            got = False
            for dealer in self.peers.ready(ready):
                got = self._receive(dealer) or got
            scan = self._scan
            if scan is not None and (scan.out or scan.rebound_out):
                self._send_results(scan)
            now = time.monotonic()
            if got:
                self._last_batch = now
            self._housekeeping(now)
            self.duty.end()
        scan = self._scan
        if scan is not None:
            self._send_results(scan)
            self._grant(scan)
        self.peers.flush()

    def _timeout(self) -> int:
        scan = self._scan
        if scan is not None and scan.ungranted:
            return 2
        if scan is not None and scan.syncing or self.peers.outbox:
            return 10
        return 100

    def _run_commands(self) -> None:
        """Every command posted since the last pass: the one dispatch of the data thread."""
        for command in self._commands.drain():
            match command:
                case Assign(uid, events, counts, end):
                    self._on_assignment(uid, events, counts, end)
                case JoinedScan(uid):
                    if self._scan is not None and self._scan.uuid == uid:
                        self._scan.joined = True
                case TakeOver(uid, entry):
                    scan = self._scan
                    if scan is not None and scan.uuid == uid and not scan.finished:
                        for origin, taken in self._takeovers.rebind(entry):
                            self._process(scan, taken, origin)
                case IngestersFound(found):
                    self._on_ingesters(found)
                case ReducerFound(reducer):
                    self.peers.set_reducer(reducer)
                case BeginScan(uid, finished, params, phash, late):
                    self._start_scan(uid, finished, params, phash, late)
                case NewParameters(uid, params, phash):
                    self._on_parameters(uid, params, phash)
                case FinishScan(uid):
                    scan = self._scan
                    if scan is not None and scan.uuid == uid:
                        self._finish_scan(scan)
                case EndScan():
                    if self._scan is not None:
                        self._finish_scan(self._scan)

    def _on_ingesters(self, found: dict[str, IngesterState]) -> None:
        before = {(n, st.service_uuid) for n, st in self.peers.ingesters.items()}
        restarted = self.peers.restarted(found)
        for dealer in restarted:
            while self._receive(dealer):  # what the old process sent before it died counts
                pass
        scan = self._scan
        if restarted and scan is not None and not scan.finished:
            # it resumes the scan and fills what it lost with placeholders: look for them
            scan.losses.checking = True
        self._discovered = True
        self.peers.set_ingesters(found)
        with self._state_lock:
            self.state.ingesters = [found[n] for n in sorted(found)]
        if before != {(n, st.service_uuid) for n, st in found.items()}:
            self._publish_now()  # the controller derives the usable streams from this list

    def _publish_now(self) -> None:
        try:
            self.publish_config()
        except redis.RedisError as exc:
            self.log.warning("worker %s: cannot publish config: %s", self.name, exc)

    def _receive(self, dealer: Dealer) -> bool:
        got = False
        for _ in range(RECV_BURST):
            try:
                frames = dealer.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            got = True
            self._on_batch(dealer, frames)
        return got

    def _on_batch(self, dealer: Dealer, frames: list[Any]) -> None:
        scan = self._scan
        if scan is None or scan.syncing or scan.finished:
            self._counters.unused(scan, 1)
            return
        self._counters.batches += 1
        self._counters.bytes_received += dataplane.message_bytes(frames)
        try:
            if dataplane.kind(frames) == dataplane.REBOUND:
                self._on_rebound(scan, frames)
                return
            arrival, events = dataplane.decode_event_batch(frames)
        except DECODE_ERRORS as exc:
            self._counters.malformed += 1
            self.log.error(
                "worker %s: dropped a malformed batch of %d frames from ingester %s: %s",
                self.name, len(frames), dealer.name, exc,
            )
            return
        scan.arrival = min(scan.arrival, arrival)
        ready = scan.assembler.add(events)
        if ready:
            self._process(scan, ready)

    def _on_rebound(self, scan: ScanState, frames: list[Any]) -> None:
        """Frames of a lost worker's events, resent to this one (``worker.takeover``)."""
        key, origin, inner = dataplane.split_rebound(frames)
        arrival, events = dataplane.decode_event_batch(inner)
        scan.arrival = min(scan.arrival, arrival)
        ready = self._takeovers.add(key, events)
        if ready:
            self._process(scan, ready, origin)

    def _on_assignment(self, uid: uuid.UUID, events: list[int], counts: list[int],
                       end: int) -> None:
        scan = self._scan
        if scan is None or scan.uuid != uid or scan.finished:
            return
        scan.assigned_upto = max(scan.assigned_upto, end)
        if not scan.joined or not events:
            return  # before this process joined, the name's events were another process's
        ready = scan.assembler.expect(events, counts)
        if ready:
            self._process(scan, ready)

    def _process(self, scan: ScanState, ready: list[EventData], origin: str | None = None,
                 ) -> None:
        process = scan.host.process
        results = scan.out if origin is None else scan.rebound_out.setdefault(origin, [])
        n = len(ready)
        if scan.losses.checking:
            ready = scan.losses.keep(ready, self.log, self.name)
        for event in ready:
            out = process(event)
            if out is not None:
                evn = event.event_number
                try:
                    results.append((evn, encode_payload(out)))
                except Exception:
                    scan.host.counters.errors += 1
                    self.log.exception(
                        "worker %s: the result of event %d cannot be pickled", self.name, evn
                    )
        if not scan.ungranted:
            scan.first_ungranted = time.monotonic()
        scan.processed += n
        scan.ungranted += n
        self._counters.processed += n
        if scan.ungranted >= self._credit_batch:
            self._send_results(scan)  # results first: the controller checks them against credits
            self._grant(scan)

    def _send_results(self, scan: ScanState) -> None:
        if scan.rebound_out:
            for origin, results in scan.rebound_out.items():
                self._send_batch(scan, results, origin)
            scan.rebound_out = {}
        results = scan.out
        if results:
            scan.out = []
            self._send_batch(scan, results, None)

    def _send_batch(self, scan: ScanState, results: list[tuple[int, bytes]],
                    origin: str | None) -> None:
        scan.results += len(results)
        self._counters.results += len(results)
        self._counters.result_messages += 1
        self.peers.send_results(dataplane.encode_results(
            self.name, scan.phash, results, scan.uuid, scan.take_arrival(), origin))

    def _grant(self, scan: ScanState) -> None:
        first = not scan.initial_granted
        if first:
            if scan.syncing or scan.finished:
                return  # the first grant waits for the ingesters; none after the end
            if self.state.class_error is not None:
                return  # the user's class failed: take no events (the controller shows why)
            granted = self.worker_settings.credit_window
        elif scan.ungranted:
            granted = scan.ungranted
        else:
            return
        self._send_results(scan)  # the totals below count them as sent
        done = self._takeovers.done()
        if scan.joined:
            done[self.name] = scan.assembler.done_below(scan.assigned_upto)
        msg = CreditMessage(
            worker=self.name, granted=granted, processed=scan.processed, results=scan.results,
            errors=scan.host.counters.errors, service=self._service, done=done,
            lost=dict(scan.losses.events), lost_first=dict(scan.losses.first),
        )
        self.credits.post(scan.credit_key, msg, first=first)
        self._counters.credits_granted += granted
        if not first:
            scan.ungranted = 0
        scan.initial_granted = True

    def _housekeeping(self, now: float) -> None:
        scan = self._scan
        if scan is not None:
            if scan.syncing:
                self._check_sync(scan, now)
            elif scan.ungranted and (
                now - self._last_batch >= CREDIT_IDLE
                or now - scan.first_ungranted >= CREDIT_MAX_AGE
            ):
                self._grant(scan)
        if self.peers.outbox:
            self.peers.flush()
        if now >= self._next_ping:
            self._next_ping = now + self.settings.config_interval
            self.peers.ping_all()

    # === scans ===

    def _start_scan(self, uid: uuid.UUID, finished: bool, params: Parameters, phash: str,
                    late: bool = False) -> None:
        old = self._scan
        if old is not None:
            if not old.finished:
                self.log.info("worker %s: scan %s replaced by %s", self.name, old.uuid, uid)
            self._end_scan(old)
        self._counters.unused(None, self.peers.drain())
        self._scan, self._takeovers = None, Takeovers()
        self._counters.scans += 1
        if not finished:
            host = self._make_host(uid, params)
            self._scan = ScanState(
                uuid=uid, host=host, phash=phash, credit_key=Keys.credits(uid),
                sync_deadline=time.monotonic() + self.settings.config_ttl, late=late,
            )
            self._discovery.fast = True
            self._discovery.wake()
        with self._state_lock:
            self.state.mapping_uuid = uid
        self._publish_now()
        self.log.info("worker %s: started scan %s", self.name, uid)

    def _make_host(self, uid: uuid.UUID, params: Parameters) -> WorkerHost:
        clock = RedisTickClock(self.redis, Keys.clock(uid))
        try:
            host = WorkerHost(self.user_class, self.name, params, self.context, self.state, clock)
            if self.user_class is not NoClass:
                with self._state_lock:
                    self.state.class_error = None  # it runs this scan: ready again
            return host
        except Exception as exc:
            self._class_error(f"{type(exc).__name__}: {exc}")
            self.log.exception("worker %s: the worker class failed to start; no results", self.name)
            return WorkerHost(NoClass, self.name, params, self.context, self.state, clock)

    def _check_sync(self, scan: ScanState, now: float) -> None:
        behind = sorted(
            name for name, st in self.peers.ingesters.items() if st.mapping_uuid != scan.uuid
        )
        if (behind or not self._discovered) and now < scan.sync_deadline:
            return
        if behind:
            self.log.warning(
                "worker %s: ingesters %s did not switch to scan %s; starting anyway",
                self.name, behind, scan.uuid,
            )
        self._counters.unused(scan, self.peers.drain())
        scan.syncing = False
        self._discovery.fast = False
        self._grant(scan)

    def _on_parameters(self, uid: uuid.UUID, params: Parameters, phash: str) -> None:
        scan = self._scan
        if scan is None or scan.uuid != uid:
            return
        # The updates thread has already replaced the raw values (``Service.parameters``);
        # this drops the last references the worker holds, unless user code kept them.
        dropped = replace_parameters(scan.host.parameters, params)
        scan.phash = phash
        trim_after(dropped, f"worker {self.name}: parameters replaced")

    def _finish_scan(self, scan: ScanState) -> None:
        if scan.finished:
            return
        scan.finished = True
        scan.syncing = False
        self._send_results(scan)
        self._grant(scan)
        self.peers.flush()
        scan.host.finish()
        c = self._counters
        self.log.info(
            "worker %s: finished scan %s after %d events (%d results, %d errors); "
            "%d event batches, %d result messages so far",
            self.name, scan.uuid, scan.processed, scan.results, scan.host.counters.errors,
            c.batches, c.result_messages,
        )

    def _end_scan(self, scan: ScanState) -> None:
        self._send_results(scan)
        self._grant(scan)
        self.peers.flush()
        self._counters.errors_done += scan.host.counters.errors
        incomplete, unassigned = scan.assembler.leftovers()
        self._counters.old_scan += incomplete
        self._counters.unused(scan, unassigned)
        self._counters.duplicates_done += scan.assembler.duplicates
        self._last_host = scan.host

    def _teardown_sockets(self) -> None:
        self.peers.close()
        self._commands.close()

    # === background threads ===

    def _on_assignments(self, uid: uuid.UUID, entries: list[Entry]) -> None:
        for command in commands_for(uid, entries, self.name, self._service, self._counters,
                                    self.log):
            self._commands.post(command)

    # === published state ===

    def publish_config(self) -> None:
        self.refresh_state()
        super().publish_config()

    def refresh_state(self) -> dict[str, float]:
        """Bring the published state up to date; its numbers (``/metrics`` reads them)."""
        c = self._counters
        scan = self._scan
        now = time.monotonic()
        t0, n0 = self._rate
        with self._state_lock:
            st = self.state
            if now - t0 >= 0.5:
                st.event_rate = (c.processed - n0) / (now - t0)
                self._rate = (now, c.processed)
            fill_state(st, c, scan, self.peers, self.credits, self.duty)
            return numbers(st)
