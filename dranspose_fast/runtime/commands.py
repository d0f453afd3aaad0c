"""One command queue to a data thread, the same for the ingester and the worker.

A data thread owns every ZeroMQ socket and all per-scan state; other threads (controller
updates, assignments, discovery, user sources) never touch them.  They ``post`` a small typed
command instead: it is appended to a deque and the data thread is woken through an inproc
socket (``socket``, which its poller watches).  The data thread then ``drain``\\ s the
commands, in the order they were posted, and dispatches them in one place.

Wake-ups are coalesced: one message waits on the socket at a time, however many commands
are posted, and ``wake`` alone (no command) makes the data loop look at other work (the
ingester's user sources push their items to queues of their own and only wake it).
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import zmq

__all__ = ["CommandQueue"]

C = TypeVar("C")


class CommandQueue(Generic[C]):
    """Commands from any thread to one data thread (see the module docstring).

    Parameters
    ----------
    ctx : zmq.Context
        The context of the data thread's sockets (the wake-up socket pair is inproc).
    name : str
        Part of the inproc address, for debugging.
    """

    def __init__(self, ctx: zmq.Context[Any], name: str = "commands") -> None:
        address = f"inproc://dfast-{name}-{uuid.uuid4().hex}"
        #: The socket the data loop polls (``POLLIN``); read only by ``drain``.
        self.socket: zmq.Socket[Any] = ctx.socket(zmq.PULL)
        self.socket.bind(address)
        self._push: zmq.Socket[Any] = ctx.socket(zmq.PUSH)
        self._push.connect(address)
        self._items: deque[C] = deque()
        self._lock = threading.Lock()
        self._pending = False

    def post(self, command: C) -> None:
        """Queue ``command`` for the data thread and wake it (any thread)."""
        self._items.append(command)
        self.wake()

    def wake(self) -> None:
        """Wake the data thread without a command (any thread); nothing after ``close``."""
        with self._lock:
            if self._pending or self._push.closed:
                return
            self._pending = True
            try:
                self._push.send(b"", zmq.NOBLOCK)
            except zmq.Again:  # a wake-up is already queued
                pass

    def drain(self) -> Iterator[C]:
        """The commands posted so far, oldest first (the data thread only).

        The wake-up is consumed first, so a command posted while the caller works through
        these wakes the loop again.
        """
        with self._lock:
            self._pending = False
            while not self.socket.closed:
                try:
                    self.socket.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
        items = self._items
        while items:
            yield items.popleft()

    def close(self) -> None:
        """Close both sockets (idempotent); later posts are kept but wake nobody."""
        with self._lock:
            if not self._push.closed:
                self._push.close(linger=0)
            if not self.socket.closed:
                self.socket.close(linger=0)
