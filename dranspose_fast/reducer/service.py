"""The reducer service: every worker's results → the user's ``process_result`` → ``publish``.

One PULL socket bound on the port of ``reducer_url`` receives result batches from all
workers; a loop thread unpacks them and calls ``process_result`` for each result, then
reports the running totals per worker to ``dfast:reduced:{uuid}`` (at most every
``REDUCED_INTERVAL`` while results arrive, and once more when idle) so the controller knows
when the scan is complete. Each scan gets a fresh user instance and timer (``context``
persists). ``publish`` is served read-only over the HDF5-REST partial view
(``api.h5dict``), next to ``GET /api/v1/status``.

A result message names the mapping uuid the worker produced it for
(``dataplane.result_scan``). Results of an earlier scan are dropped and counted; results of
a scan the reducer has not heard of yet (a worker that switched first) are held, bounded,
until the update arrives.

Results are unpickled as data only (``dataplane.decode_result``): plain data, numpy, and the
classes named in ``DFAST_RESULT_CLASSES``. A result that names anything else is refused
before any of its code could run, counted in ``undecodable_results`` (a loss in
``/api/v1/status``) and logged sparsely; the scan goes on.

The objects that exist at start (imports, the user's class) are exempted from the cyclic
collector (``gc.freeze``), so full collections of that heap do not pause the result loop.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Any

import msgspec
import redis
import uvicorn
import zmq
from fastapi import FastAPI, Response

from dranspose_fast.api.guard import protect
from dranspose_fast.api.h5dict import router as h5dict_router
from dranspose_fast.errors import ClassLoadError
from dranspose_fast.helpers.utils import import_class
from dranspose_fast.protocol import ReducerState
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.curve import CurveServer, server_keys
from dranspose_fast.runtime.heap import settle_heap
from dranspose_fast.runtime.memory import replace_parameters, trim_after
from dranspose_fast.runtime.metrics import (
    CONTENT_TYPE,
    ComponentMetrics,
    LatencyHistogram,
    exposition,
    numbers,
    role_families,
)
from dranspose_fast.runtime.redis_messages import ControllerUpdate, Keys, ReducedMessage
from dranspose_fast.runtime.service import Service
from dranspose_fast.runtime.settings import RETENTION_MAX_EVENTS, ReducerSettings, RestSettings
from dranspose_fast.runtime.usercode import (
    Parameters,
    ReducerHost,
    close_user_object,
    describe,
)

__all__ = ["Reducer", "create_app", "run"]

#: Shortest period of ``ReducedMessage`` entries while results arrive (docs/protocol.md).
REDUCED_INTERVAL = 0.05
#: Poll period of the loop; also how long "idle" is before the last totals go out.
POLL_MS = 20
#: Result messages of a not-yet-announced scan held at most (beyond: dropped, counted).
MAX_HELD = 10_000
RECV_BURST = 256
DECODE_ERRORS = (ValueError, TypeError, IndexError, msgspec.MsgspecError)
#: Events behind a worker's latest result within which a second result of the same event
#: (and origin) is recognised; retention never resends older ones
#: (``DFAST_RETENTION_EVENTS`` <= ``settings.RETENTION_MAX_EVENTS``, the same number).
DEDUP_SPAN = RETENTION_MAX_EVENTS


class SeenEvents:
    """The events one origin sent results for, the last ``DEDUP_SPAN`` of them."""

    __slots__ = ("events", "top")

    def __init__(self) -> None:
        self.events: set[int] = set()
        self.top = -1

    def add(self, evn: int) -> bool:
        """False if ``evn`` was seen already."""
        events = self.events
        if evn in events:
            return False
        events.add(evn)
        if evn > self.top:
            self.top = evn
            if len(events) > 2 * DEDUP_SPAN:
                low = evn - DEDUP_SPAN
                self.events = {e for e in events if e > low}
        return True

_encoder = msgspec.msgpack.Encoder()


class ReducerServiceState(ReducerState):
    """``ReducerState`` plus the counters the reducer publishes in its config."""

    results: int = 0
    user_errors: int = 0
    timer_errors: int = 0
    last_error: str | None = None
    malformed_batches: int = 0
    undecodable_results: int = 0
    #: Results of an event a lost worker was rebound from that arrived a second time (from
    #: the lost worker and from its successor): the first is reduced, these are not.
    duplicate_results: int = 0
    dropped_old_scan: int = 0
    held_results: int = 0
    dropped_held_overflow: int = 0
    result_messages: int = 0
    received_bytes: int = 0
    #: Handshakes refused on the results socket by CURVE (no keys, wrong or unknown key).
    refused_peers: int = 0
    class_errors: int = 0
    class_error: str | None = None


class _NoReducer:
    """Stand-in when no reducer class is given or it cannot be loaded: counts only."""

    def __init__(self) -> None:
        self.publish: dict[str, Any] = {}

    def process_result(self, result: Any, parameters: Any) -> None:
        return None


class Reducer(Service):
    """The distributed reducer (docs/architecture.md, docs/protocol.md)."""

    role = "reducer"

    def __init__(self, settings: ReducerSettings | None = None) -> None:
        self.reducer_settings = settings if settings is not None else ReducerSettings()
        #: What results may hold (raises ValueError for a class that cannot be allowed).
        self.result_classes = dataplane.result_classes(self.reducer_settings.result_classes)
        url = self.reducer_settings.reducer_url
        state = ReducerServiceState(url=url)
        super().__init__(state, self.reducer_settings)
        self.state: ReducerServiceState
        if url.port is None:
            raise ValueError(f"reducer_url {url} has no port to bind")
        # where it listens (REDUCER_BIND) apart from what workers are told (REDUCER_URL)
        address = self.reducer_settings.bind_address()
        keys = server_keys(self.reducer_settings)  # results only from the ensemble's keys
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.curve = CurveServer(self.ctx, keys, "reducer") if keys is not None else None
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.TCP_KEEPALIVE, 1)
        if self.curve is not None:
            self.curve.secure(self.pull)
        try:
            self.pull.bind(address)
        except zmq.ZMQError as exc:
            self._close_sockets()
            raise OSError(f"reducer cannot bind {address} (for {url}): {exc}") from None
        self.context: dict[Any, Any] = {}
        self.user_class = self._load_class()
        self.describe(list(describe(self.user_class).values()))

        self.host: ReducerHost | None = None
        self._lock = threading.RLock()  # the host and scan fields; held per result batch
        self._scan_uuid: uuid.UUID | None = None
        self._finished = False
        self._past: deque[uuid.UUID] = deque(maxlen=256)
        self._held: dict[uuid.UUID, list[list[Any]]] = {}
        self._nheld = 0
        self._done = {"results": 0, "errors": 0, "timer_errors": 0}
        self._counts = {"malformed": 0, "undecodable": 0, "old": 0, "overflow": 0, "bytes": 0,
                        "duplicates": 0}
        self._seen: dict[str, SeenEvents] = {}  # by origin worker (reduced once each)
        self._dirty = False
        self._last_reduced = 0.0
        self._messages = 0
        #: Seconds from the ingester's arrival stamp to the result reduced (docs/metrics.md).
        self.latency = LatencyHistogram()
        self.metrics = ComponentMetrics("reducer", self.state.name, self.refresh_state,
                                        lambda: self.latency.families(self.state.name))
        self.log.info("created reducer with state %s", self.state)

    # === lifecycle ===

    def _load_class(self) -> type:
        path = self.reducer_settings.reducer_class
        if not path:
            return _NoReducer
        try:
            return import_class(path)
        except ClassLoadError as exc:
            self.state.class_errors += 1
            self.state.class_error = str(exc)
            self.log.error("reducer runs without user code: %s", exc)
            return _NoReducer

    def start(self) -> None:
        """Start the config, updates and result-loop threads; returns at once (``close()``
        stops them; ``run()`` blocks until stopped)."""
        self.start_background()
        settle_heap()
        self._spawn(self._loop, "results")

    def get_data(self) -> tuple[Any, AbstractContextManager[Any]]:
        """``(publish, lock)`` of the current user instance, for the HTTP layer."""
        host = self.host
        if host is None:
            return {}, nullcontext()
        return host.get_data()

    def close(self) -> None:
        """Stop the threads and the timer, call the user's ``close(context)``, delete the key
        (idempotent)."""
        if not self.begin_close():
            return
        for thread in self._threads:
            thread.join(timeout=5)
        host = self.host
        if host is not None:
            host.stop_timer()
            close_user_object(host.instance, self.context, self.log, "reducer")
        super().close()
        self._close_sockets()

    def _close_sockets(self) -> None:
        self.pull.close(linger=0)
        if self.curve is not None:
            self.curve.close()  # its threads' sockets go before the context ends
        self.ctx.term()

    # === scans (updates thread) ===

    def on_update(self, update: ControllerUpdate, previous: ControllerUpdate | None) -> None:
        phash, params = self.current_parameters()
        uid = update.mapping_uuid
        if uid is None:
            return
        dropped = 0
        with self._lock:
            if uid != self._scan_uuid:
                self._start_scan(uid, update.finished, params)
                return
            if previous is not None and previous.parameters_version != update.parameters_version:
                host = self.host
                if host is not None:
                    dropped = replace_parameters(host.parameters, params)
                    host.parameters_version += 1
            if update.finished and not self._finished:
                self._finish()
        # Outside the lock: the result loop need not wait for the trim.
        trim_after(dropped, "reducer: parameters replaced")

    def on_redis_restart(self) -> None:
        with self._lock:
            if self._scan_uuid is not None and not self._finished:
                self._finish()

    def _start_scan(self, uid: uuid.UUID, finished: bool, params: Parameters) -> None:
        old = self.host
        if old is not None:
            old.stop_timer()
            self._done["results"] += old.counters.results
            self._done["errors"] += old.counters.errors
            self._done["timer_errors"] += old.counters.timer_errors
        if self._scan_uuid is not None:
            self._past.append(self._scan_uuid)
        self._scan_uuid = uid
        self._finished = finished
        self._dirty = False
        self._seen = {}
        self.host = self._make_host(params)
        if not finished:
            self.host.start_timer()
        with self._state_lock:
            self.state.mapping_uuid = uid
        try:
            self.publish_config()
        except redis.RedisError as exc:
            self.log.warning("reducer: cannot publish config: %s", exc)
        self.log.info("reducer: started scan %s", uid)
        held = self._held.pop(uid, [])
        self._nheld -= len(held)
        for frames in held:
            self._reduce(frames)
        # Forget held results of scans that will never start.
        for stale in [u for u in self._held if u in self._past]:
            self._counts["old"] += len(self._held[stale])
            self._nheld -= len(self._held.pop(stale))

    def _make_host(self, params: Parameters) -> ReducerHost:
        try:
            return ReducerHost(self.user_class, params, self.context, self.state)
        except Exception as exc:
            self.state.class_errors += 1
            self.state.class_error = f"{type(exc).__name__}: {exc}"
            self.log.exception("reducer: the reducer class failed to start; counting only")
            return ReducerHost(_NoReducer, params, self.context, self.state)

    def _finish(self) -> None:
        self._send_reduced()
        self._finished = True
        host = self.host
        if host is not None:
            host.finish()
        self.log.info("reducer: finished scan %s after %d result messages so far",
                      self._scan_uuid, self._messages)

    # === results (loop thread) ===

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        while not self.stop_event.is_set():
            got = False
            if poller.poll(POLL_MS):
                for _ in range(RECV_BURST):
                    try:
                        frames = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    got = True
                    self._messages += 1
                    self._on_message(frames)
            if self._dirty and (
                not got or time.monotonic() - self._last_reduced >= REDUCED_INTERVAL
            ):
                with self._lock:
                    self._send_reduced()

    def _on_message(self, frames: list[Any]) -> None:
        self._counts["bytes"] += dataplane.message_bytes(frames)
        try:
            uid = dataplane.result_scan(frames)
        except DECODE_ERRORS as exc:
            self._counts["malformed"] += 1
            self.log.error("reducer: dropped a result message: %s", exc)
            return
        with self._lock:
            if uid == self._scan_uuid:
                self._reduce(frames)
            elif uid in self._past:
                self._counts["old"] += 1
            elif self._nheld < MAX_HELD:
                self._held.setdefault(uid, []).append(frames)
                self._nheld += 1
            else:
                self._counts["overflow"] += 1
                self.log.error("reducer: dropped results of unknown scan %s: too many held", uid)

    def _reduce(self, frames: list[Any]) -> None:
        host = self.host
        if host is None:
            return
        try:
            worker, phash, arrival, origin, results = dataplane.decode_result_batch(frames)
        except DECODE_ERRORS as exc:
            self._counts["malformed"] += 1
            self.log.error("reducer: dropped a malformed result batch: %s", exc)
            return
        seen = self._seen.get(origin or worker)
        if seen is None:
            seen = self._seen[origin or worker] = SeenEvents()
        for evn, payload in results:
            if not seen.add(evn):  # a lost worker's event, reduced once already
                self._counts["duplicates"] += 1
                per_worker = host.counters.per_worker
                per_worker[worker] = per_worker.get(worker, 0) + 1  # handled: the scan can end
                continue
            try:
                value = dataplane.decode_result(payload, self.result_classes)
            except Exception as exc:
                # Counted as reduced for the worker, so the scan can still complete.
                self._counts["undecodable"] += 1
                per_worker = host.counters.per_worker
                per_worker[worker] = per_worker.get(worker, 0) + 1
                count = self._counts["undecodable"]
                if count & (count - 1) == 0:  # the 1st, 2nd, 4th, ...: a flood stays short
                    self.log.error("reducer: result %d of %s refused (%d undecodable so "
                                   "far): %s", evn, worker, count, exc)
                continue
            host.process(evn, worker, phash, value)  # type: ignore[arg-type]
        self._dirty = True
        if arrival is not None and results:  # once per batch, weighted by its results
            self.latency.observe(time.time() - arrival, len(results))

    def _send_reduced(self) -> None:
        """XADD the running totals of the current scan (called with the lock held)."""
        host = self.host
        if host is None or self._scan_uuid is None or not self._dirty:
            return
        msg = ReducedMessage(
            reduced=dict(host.counters.per_worker),
            errors=host.counters.errors + self._counts["undecodable"],
        )
        try:
            self.redis.xadd(Keys.reduced(self._scan_uuid), {"d": _encoder.encode(msg)})
        except redis.RedisError as exc:
            self.log.warning("reducer: cannot report reduced totals (%s); retrying", exc)
            return
        self._dirty = False
        self._last_reduced = time.monotonic()

    # === published state ===

    def publish_config(self) -> None:
        self.refresh_state()
        super().publish_config()

    def refresh_state(self) -> dict[str, float]:
        """Bring the published state up to date; its numbers (``/metrics`` reads them)."""
        host = self.host
        with self._state_lock:
            st = self.state
            cur = host.counters if host is not None else None
            st.results = self._done["results"] + (cur.results if cur else 0)
            st.processed_events = st.results
            st.user_errors = self._done["errors"] + (cur.errors if cur else 0)
            st.timer_errors = self._done["timer_errors"] + (cur.timer_errors if cur else 0)
            st.last_error = (cur.last_error or None) if cur else None
            st.malformed_batches = self._counts["malformed"]
            st.undecodable_results = self._counts["undecodable"]
            st.duplicate_results = self._counts["duplicates"]
            st.dropped_old_scan = self._counts["old"]
            st.held_results = self._nheld
            st.dropped_held_overflow = self._counts["overflow"]
            st.result_messages = self._messages
            st.received_bytes = self._counts["bytes"]
            st.refused_peers = self.curve.refused if self.curve is not None else 0
            return numbers(st)


# === HTTP ===


def create_app(reducer: Reducer | None = None, rest: RestSettings | None = None) -> FastAPI:
    """The reducer's HTTP app: the h5dict view of ``publish`` at ``/`` and the status.

    Without ``reducer`` the app builds one from the environment (``ReducerSettings``) when
    it starts and closes it when it stops, as ``uvicorn dranspose_fast.reducer:app`` needs.
    ``rest`` (default: from the environment) sets the token, origins and body limits
    (docs/security.md); every endpoint only reads, so a token is asked for only with
    ``DFAST_REST_AUTH=all``.
    """
    holder: dict[str, Reducer] = {}
    if reducer is not None:
        holder["r"] = reducer

    owned = "r" not in holder

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Every startup of an app that owns its service builds a fresh one (the last one was
        # closed by the shutdown before), so a second server on the same app runs one too.
        if owned:
            holder["r"] = Reducer()
            holder["r"].start()
        try:
            yield
        finally:
            if owned:
                holder.pop("r").close()

    app = FastAPI(title="dranspose-fast reducer", lifespan=lifespan)
    protect(app, rest, reads=("/datasets/{uuid}/value",))

    def get_data() -> tuple[Any, AbstractContextManager[Any]]:
        current = holder.get("r")
        return current.get_data() if current is not None else ({}, nullcontext())

    app.state.get_data = get_data

    @app.get("/api/v1/status")
    async def status() -> bool:
        return True

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """The Prometheus text format (docs/metrics.md)."""
        current = holder.get("r")
        body = current.metrics.text() if current is not None else exposition(
            role_families("reducer", "reducer", {}))
        return Response(body, media_type=CONTENT_TYPE)

    app.include_router(h5dict_router)
    return app


app = create_app()


def run(
    host: str = "127.0.0.1",
    port: int = 5000,
    settings: ReducerSettings | None = None,
    log_level: str = "info",
    on_start: Callable[[Reducer], None] | None = None,
) -> None:
    """Run a reducer and serve its HTTP app with uvicorn until SIGTERM/SIGINT."""
    rest = RestSettings()  # invalid settings: an error before anything starts
    reducer = Reducer(settings)
    # uvicorn re-raises the signal that stopped it once it is done; with our handler in place
    # that only sets the stop event, so ``close()`` below still runs (and deletes the key).
    reducer.install_signal_handlers()
    reducer.start()
    if on_start is not None:
        on_start(reducer)
    try:
        uvicorn.run(create_app(reducer, rest), host=host, port=port, log_level=log_level)
    finally:
        reducer.close()
