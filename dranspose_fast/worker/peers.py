"""A worker's connections: one DEALER per ingester, the PUSH to the reducer, the credit sender.

The sockets are owned by the worker's data thread (ZeroMQ sockets are not shared between
threads). Results wait in an outbox until a reducer is known and the PUSH accepts them, so
none is lost because the reducer started late or is slow. Credits go to Redis from a thread
of their own (``CreditSender``): the data thread never waits for a Redis round trip, which
on a loaded machine took most of its wall time (profile in the issue "Data plane").
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
import zmq

from dranspose_fast.protocol import IngesterState, ReducerState
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.curve import ClientKeys, secure_client
from dranspose_fast.runtime.local_hop import usable
from dranspose_fast.runtime.redis_messages import CreditMessage, credit_encoder

__all__ = ["CreditSender", "Dealer", "Peers"]

#: Wait before a credit message that Redis refused is sent again.
CREDIT_RETRY = 0.05

logger = logging.getLogger(__name__)


@dataclass
class Dealer:
    name: str
    #: The ingester's advertised URL, and the address this DEALER dialled: that URL, or the
    #: ingester's local hop on the same host (``runtime.local_hop``).
    url: str
    service_uuid: uuid.UUID
    sock: zmq.Socket[Any]
    via: str


class Peers:
    """DEALERs to the ingesters (each says hello with the worker's name) and the PUSH to the
    reducer; all CURVE clients when ``keys`` are given."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        name: str,
        service_uuid: uuid.UUID,
        poller: zmq.Poller,
        keys: ClientKeys | None = None,
        local_hop: bool = True,
    ) -> None:
        self.ctx = ctx
        self.name = name
        #: CURVE keys of every data socket (``None``: plain; ``runtime.curve``).
        self.keys = keys
        #: Whether an ingester on this host is dialled on its local hop (``DFAST_LOCAL_HOP``).
        self.local_hop = local_hop
        self.hello = dataplane.encode_hello(service_uuid, name)
        self.poller = poller
        self.dealers: dict[str, Dealer] = {}
        self.ingesters: dict[str, IngesterState] = {}
        self.reconnects = 0
        self.outbox: deque[list[Any]] = deque()
        self._push: zmq.Socket[Any] | None = None
        self._reducer: tuple[str, uuid.UUID] | None = None

    # === ingesters ===

    def set_ingesters(self, found: dict[str, IngesterState]) -> None:
        """Connect to new ingesters, reconnect restarted ones, drop vanished ones."""
        for name, st in found.items():
            dealer = self.dealers.get(name)
            if dealer is not None and (
                dealer.url != str(st.url) or dealer.service_uuid != st.service_uuid
            ):
                logger.info("worker %s: ingester %s restarted; reconnecting", self.name, name)
                self._close(dealer)
                self.reconnects += 1
                dealer = None
            if dealer is None:
                self._open(st)
        for name in [n for n in self.dealers if n not in found]:
            logger.info("worker %s: ingester %s is gone", self.name, name)
            self._close(self.dealers[name])
        self.ingesters = found

    def restarted(self, found: dict[str, IngesterState]) -> list[Dealer]:
        """The DEALERs to ingesters that ``found`` shows as a new process."""
        return [d for n, d in self.dealers.items()
                if n in found and found[n].service_uuid != d.service_uuid]

    def _open(self, st: IngesterState) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        local = self.local_hop and usable(st.local_url, st.host_id)
        if not local:  # the kernel vouches for the local hop; every other one speaks CURVE
            secure_client(sock, self.keys)  # the hello names us; the ingester binds the name
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)  # credits bound what is in flight
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        via = str(st.local_url) if local else str(st.url)
        sock.connect(via)
        dealer = Dealer(str(st.name), str(st.url), st.service_uuid, sock, via)
        self.dealers[dealer.name] = dealer
        self.poller.register(sock, zmq.POLLIN)
        self.ping(dealer)
        logger.info("worker %s: connected to ingester %s at %s", self.name, st.name, via)

    def _close(self, dealer: Dealer) -> None:
        self.poller.unregister(dealer.sock)
        dealer.sock.close(linger=0)
        self.dealers.pop(dealer.name, None)

    def ping(self, dealer: Dealer) -> None:
        try:
            dealer.sock.send_multipart(self.hello, zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected yet; the next ping goes out when it is

    def ping_all(self) -> None:
        for dealer in self.dealers.values():
            self.ping(dealer)

    def ready(self, polled: dict[Any, int]) -> Iterator[Dealer]:
        """The DEALERs the last poll found readable."""
        for dealer in list(self.dealers.values()):
            if dealer.sock in polled and not dealer.sock.closed:
                yield dealer

    def drain(self) -> int:
        """Discard every message already received; return how many there were."""
        dropped = 0
        for dealer in self.dealers.values():
            while True:
                try:
                    dealer.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                dropped += 1
        return dropped

    # === the reducer ===

    def set_reducer(self, st: ReducerState | None) -> None:
        """Connect the PUSH to the reducer's URL (once known; a new URL replaces the old)."""
        if st is None:
            return  # keep what we have: ZeroMQ reconnects when the reducer comes back
        url = str(st.url)
        if self._reducer is not None and self._reducer[0] == url:
            if self._reducer[1] != st.service_uuid:
                # Same address: the PUSH reconnects by itself and delivers what it holds.
                logger.info("worker %s: reducer restarted at %s", self.name, url)
                self._reducer = (url, st.service_uuid)
            return
        if self._push is None:
            self._push = self.ctx.socket(zmq.PUSH)
            secure_client(self._push, self.keys)
            self._push.setsockopt(zmq.LINGER, 2000)
            self._push.setsockopt(zmq.TCP_KEEPALIVE, 1)
            # Queue only on live connections: a pipe to a reducer that went away would hold
            # results that ``disconnect`` then discards; with no peer they stay in the outbox.
            self._push.setsockopt(zmq.IMMEDIATE, 1)
        elif self._reducer is not None:
            self._push.disconnect(self._reducer[0])
        self._push.connect(url)
        self._reducer = (url, st.service_uuid)
        logger.info("worker %s: sending results to the reducer at %s", self.name, url)
        self.flush()

    def send_results(self, frames: list[Any]) -> None:
        self.outbox.append(frames)
        self.flush()

    def flush(self) -> None:
        """Send queued results as far as the PUSH takes them without blocking."""
        push = self._push
        if push is None:
            return
        outbox = self.outbox
        while outbox:
            try:
                push.send_multipart(outbox[0], zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return  # the reducer is slow or away: keep the results, retry later
            outbox.popleft()

    def close(self) -> None:
        for dealer in list(self.dealers.values()):
            self._close(dealer)
        if self._push is not None:
            self._push.close()
            self._push = None


class CreditSender:
    """Sends ``CreditMessage`` entries to Redis from its own thread, in order.

    ``post`` never blocks on Redis. Messages still waiting when the next one is posted for
    the same stream are merged into one (grants add up; the running totals are the latest),
    so a slow Redis costs fewer entries, never lost credits. The first message of a scan is
    never merged: the controller reads it as the scan's initial window.
    """

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.failures = 0
        self.sent = 0
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()  # one sender at a time keeps the order
        # [stream key, message, mergeable]
        self._pending: deque[list[Any]] = deque()

    def post(self, key: str, msg: CreditMessage, first: bool = False) -> None:
        """Queue ``msg`` for ``key``; merged into a waiting message of the same key."""
        with self._cond:
            last = self._pending[-1] if self._pending else None
            if last is not None and last[0] == key and last[2] and not first:
                old: CreditMessage = last[1]
                last[1] = CreditMessage(
                    worker=msg.worker, granted=old.granted + msg.granted,
                    processed=msg.processed, results=msg.results, errors=msg.errors,
                )
            else:
                self._pending.append([key, msg, not first])
            self._cond.notify()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def run(self, stop: threading.Event) -> None:
        """Send what is posted until ``stop`` is set (then what is left is ``flush``'s)."""
        while not stop.is_set():
            with self._cond:
                if not self._pending:
                    self._cond.wait(0.1)
                    continue
            if not self._send_one():
                stop.wait(CREDIT_RETRY)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def flush(self) -> bool:
        """Send everything pending in the calling thread; False if Redis refused one."""
        while self._pending:
            if not self._send_one():
                return False
        return True

    def _send_one(self) -> bool:
        with self._send_lock:
            with self._cond:
                if not self._pending:
                    return True
                entry = self._pending[0]
                entry[2] = False  # being sent: later grants go into a new message
                key, msg = entry[0], entry[1]
            try:
                self.client.xadd(key, {"d": credit_encoder.encode(msg)})
            except redis.RedisError as exc:
                self.failures += 1
                logger.warning("worker %s: cannot grant credits (%s); retrying", self.name, exc)
                return False
            with self._cond:
                self._pending.popleft()
            self.sent += 1
            return True
