"""The ingester's ROUTER towards the workers: who may claim a worker name, sending packed
batches, bounded queues for unreachable workers, and retention of everything sent.

Runs in the ingester's data-loop thread (ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import zmq

from dranspose_fast.ingester.retention import Rebound, Retention
from dranspose_fast.ingester.sources import Counters, IngesterCounters, log_sparsely
from dranspose_fast.runtime import dataplane

__all__ = ["LOCAL_PEER", "MAX_QUEUED_EVENTS", "MAX_WORKER_FRAME", "Route", "WorkerLinks"]

#: Events kept per unreachable worker before the oldest batch is dropped (counted and logged).
#: Credits bound what a worker can be assigned, so this is a safety net, not a working limit.
MAX_QUEUED_EVENTS: Final[int] = 1 << 16
#: Largest message part a worker may send to an ingester (its hellos are under 300 bytes):
#: libzmq drops the connection of a peer that sends more before any of it is kept.
MAX_WORKER_FRAME: Final[int] = 4096


# === Workers ===


#: The "key" of a connection to the local ROUTER (``runtime.local_hop``): the kernel admitted
#: it as the ingester's own user, as trusted as a holder of the CURVE keys.
LOCAL_PEER: Final = "local"


@dataclass(slots=True)
class Route:
    """Where a worker name's batches go: the ROUTER connection its hellos came from."""

    socket: zmq.Socket[Any]
    routing_id: bytes
    service_uuid: uuid.UUID
    #: The CURVE client key (Z85) of that connection, ``LOCAL_PEER`` on the local ROUTER;
    #: ``None`` with CURVE off.
    key: str | None
    last_seen: float


class WorkerLinks:
    """The ROUTER towards the workers, with ordered, bounded queues for unreachable ones.

    A worker name is bound to the connection that said hello with it (``routes``).  Another
    connection claiming a bound name is refused unless it holds the same CURVE key (a restarted
    worker) or comes through the local ROUTER (``local``: the kernel vouches for it), or, with
    CURVE off, the bound connection is gone or silent for ``takeover_after`` seconds: nobody
    else is handed a live worker's frames.
    """

    def __init__(
        self,
        router: zmq.Socket[Any],
        counters: Counters,
        log: logging.Logger,
        max_queued_events: int = MAX_QUEUED_EVENTS,
        takeover_after: float = 5.0,
        authenticated: bool = False,
    ) -> None:
        self.router = router
        self.counters = counters
        self.log = log
        self.max_queued_events = max_queued_events
        self.takeover_after = takeover_after
        self.authenticated = authenticated
        self.routes: dict[str, Route] = {}
        #: The ROUTER on the ingester's local hop (``runtime.local_hop``), if it has one.
        self.local: zmq.Socket[Any] | None = None
        self.queues: dict[str, deque[tuple[list[Any], int]]] = {}
        self.queued_events = 0
        #: Every batch sent is kept here until it is released (``ingester.retention``).
        self.retention = Retention(0, 0)

    def send(self, dest: str | Rebound, events: list[dataplane.PartialEvent]) -> None:
        """Send one packed batch to ``dest``, or queue it behind earlier ones."""
        self.send_frames(dest, dataplane.encode_events(events), len(events), events[-1][0])

    def send_frames(self, dest: str | Rebound, frames: list[Any], nevents: int,
                    last_event: int) -> None:
        """Send an encoded batch of ``nevents`` events up to ``last_event`` to ``dest`` (a
        worker, or the successor of a lost one), or queue it; either way it is retained."""
        if isinstance(dest, Rebound):
            name, key = dest.target, dest.key
            wire = dataplane.rebound_frames(dest.key, dest.origin, frames)
        else:
            name = key = dest
            wire = frames
        self.retention.keep(key, last_event, nevents, frames)
        frames = wire
        queue = self.queues.get(name)
        if queue is None and self._try(name, frames):
            return
        if queue is None:
            queue = self.queues[name] = deque()
            self.log.info("worker %s is not reachable; queueing its batches", name)
        queue.append((frames, nevents))
        self.queued_events += nevents
        self._bound(name, queue)
        self.flush(name)

    def flush(self, name: str) -> None:
        """Send what is queued for ``name`` while it is reachable."""
        queue = self.queues.get(name)
        while queue:
            frames, n = queue[0]
            if not self._try(name, frames):
                return
            queue.popleft()
            self.queued_events -= n
        if queue is not None:
            del self.queues[name]
            self.log.info("worker %s is reachable; its queued batches are sent", name)

    def flush_all(self) -> None:
        for name in list(self.queues):
            self.flush(name)

    def drop_all(self, reason: str) -> None:
        """Drop every queued batch (a new scan makes them stale); counted and logged."""
        for name, queue in self.queues.items():
            n = sum(k for _f, k in queue)
            self.counters.dropped_for_absent_workers += n
            self.log.error("dropped %d queued events of worker %s: %s", n, name, reason)
        self.queues.clear()
        self.queued_events = 0

    def forget(self, name: str) -> int:
        """Drop what is queued for the lost worker ``name`` (retained: it is resent to the
        worker that takes over); returns the events dropped."""
        queue = self.queues.pop(name, None)
        n = sum(k for _f, k in queue) if queue else 0
        self.queued_events -= n
        return n

    def _bound(self, name: str, queue: deque[tuple[list[Any], int]]) -> None:
        total = sum(k for _f, k in queue)
        while total > self.max_queued_events and len(queue) > 1:
            _frames, n = queue.popleft()
            total -= n
            self.queued_events -= n
            self.counters.dropped_for_absent_workers += n
            self.log.error(
                "worker %s has been unreachable for more than %d events: dropped %d (%d in all)",
                name, self.max_queued_events, n, self.counters.dropped_for_absent_workers)

    def _try(self, name: str, frames: list[Any]) -> bool:
        route = self.routes.get(name)
        if route is None:
            return False
        try:
            route.socket.send_multipart([route.routing_id, *frames], flags=zmq.NOBLOCK,
                                        copy=False)
        except zmq.ZMQError as exc:
            # ROUTER_MANDATORY: the connection is gone (EHOSTUNREACH) or its pipe is full.
            if exc.errno == zmq.EHOSTUNREACH:
                del self.routes[name]  # the worker's next hello binds its new connection
                return False
            if exc.errno == zmq.EAGAIN:
                return False
            raise
        return True

    def receive_hellos(self, on_hello: Callable[[str, uuid.UUID], None],
                       sock: zmq.Socket[Any] | None = None) -> None:
        """Read every worker message ready on ``sock`` (default: the ROUTER):
        ``[routing id, *dataplane hello]``."""
        sock = self.router if sock is None else sock
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            hello = dataplane.decode_hello(frames[1:])
            if hello is None:
                self.counters.bad_worker_messages += 1
                log_sparsely(self.log, self.counters.bad_worker_messages,
                             "ignored a worker message of %d frames that is not a hello",
                             len(frames))
                continue
            service_uuid, name = hello
            if not self._bind(name, service_uuid, frames[0], sock):
                continue
            on_hello(name, service_uuid)
            if name in self.queues:
                self.flush(name)

    def _bind(self, name: str, service_uuid: uuid.UUID, frame: zmq.Frame,
              sock: zmq.Socket[Any]) -> bool:
        """Bind ``name`` to the connection ``frame`` came from on ``sock``, if allowed."""
        routing_id = frame.bytes
        key = LOCAL_PEER if sock is self.local else _user_id(frame)
        now = time.monotonic()
        route = self.routes.get(name)
        if route is not None and (route.socket is not sock or route.routing_id != routing_id):
            if key == LOCAL_PEER:
                allowed = True
            elif self.authenticated:
                allowed = key is not None and key == route.key  # the same key, restarted
            else:
                allowed = now - route.last_seen > self.takeover_after  # the weaker mode
            if not allowed:
                self.counters.refused_worker_names += 1
                log_sparsely(self.log, self.counters.refused_worker_names,
                             "refused a hello from %s claiming worker name %r, which a live "
                             "connection holds%s", _peer(frame), name,
                             " with another CURVE key" if self.authenticated else "")
                return False
            self.log.info("worker %s (%s) connects again from %s", name, service_uuid,
                          _peer(frame))
            if route.service_uuid != service_uuid and name in self.queues:
                # a new process under the name: the old one's batches are not for it
                n = self.forget(name)
                if not self.retention.enabled:
                    self.counters.dropped_for_absent_workers += n
                self.log.warning("worker %s restarted: %d events queued for its previous "
                                 "process %s", name, n, "are kept for the worker that takes "
                                 "them over" if self.retention.enabled else "are dropped")
        self.routes[name] = Route(sock, routing_id, service_uuid, key, now)
        return True


def sum_counters(own: Counters, sources: Counters, links: WorkerLinks | None,
                 refused_peers: int) -> IngesterCounters:
    """The published counters: the data loop's and the source thread's summed, with the
    links' queue and retention figures and the handshakes CURVE refused."""
    mine, theirs = own.as_dict(), sources.as_dict()
    values: dict[str, Any] = {k: mine[k] + theirs[k] for k in mine}
    values["refused_peers"] = refused_peers
    if links is not None:
        kept = links.retention
        values.update(queued_for_absent_workers=links.queued_events, retained_events=kept.events,
                      retained_bytes=kept.nbytes, released_events=kept.released,
                      resent_events=kept.resent, retention_blocked_seconds=kept.blocked_seconds)
    return IngesterCounters(**values)


def _user_id(frame: zmq.Frame) -> str | None:
    """The CURVE key (Z85) the ZAP handler gave ``frame``'s connection; ``None``: no CURVE."""
    try:
        key = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return key if isinstance(key, str) and key else None


def _peer(frame: zmq.Frame) -> str:
    try:
        return str(frame.get("Peer-Address"))
    except zmq.ZMQError:
        return "an unknown address"
