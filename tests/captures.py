"""The recorded detector streams of ``tests/data/captures``, read and sent over real sockets.

A capture is a CBOR sequence with one item per upstream message: the list of its frames.
``CaptureSender`` binds the socket the detector would (PUB or PUSH) on a free loopback port
and sends a capture's messages in order.  A PUB sender is an XPUB underneath: it waits for
the ingester's subscription before the first message, so nothing is lost to ZeroMQ's slow
joiner (a real detector that publishes before anyone subscribes loses those messages too).
"""

from __future__ import annotations

import gzip
import threading
from pathlib import Path
from typing import Any, Literal

import cbor2
import zmq

from tests.conftest import free_port

CAPTURES = Path(__file__).parent / "data" / "captures"


def read_capture(name: str | Path) -> list[list[bytes]]:
    """Every message of a capture (a file name in ``tests/data/captures``, or a path)."""
    path = Path(name) if Path(name).is_absolute() else CAPTURES / name
    opener: Any = gzip.open if path.suffix == ".gz" else open
    messages: list[list[bytes]] = []
    with opener(path, "rb") as fh:
        while True:
            try:
                item = cbor2.load(fh)
            except (cbor2.CBORDecodeEOF, EOFError):
                return messages
            messages.append([bytes(f) for f in item])


class CaptureSender:
    """Binds a PUB or PUSH socket on a free port; ``send`` streams messages into it."""

    def __init__(self, kind: Literal["PUB", "PUSH"] = "PUB",
                 ctx: zmq.Context[Any] | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.kind = kind
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.sock = self.ctx.socket(zmq.XPUB if kind == "PUB" else zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(self.url)
        self._subscribed = threading.Event()

    def wait_for_subscriber(self, timeout: float = 20.0) -> None:
        """PUB only: block until a subscriber's subscription arrives."""
        if self.kind != "PUB" or self._subscribed.is_set():
            return
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"nobody subscribed to {self.url} within {timeout} s")
        self.sock.recv()
        self._subscribed.set()

    def send(self, messages: list[list[bytes]], timeout: float = 20.0) -> None:
        """Send every message in order (after the first subscription, for PUB)."""
        self.wait_for_subscriber(timeout)
        for frames in messages:
            self.sock.send_multipart(frames)

    def send_in_thread(self, messages: list[list[bytes]]) -> threading.Thread:
        thread = threading.Thread(target=self.send, args=(messages,), daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.sock.close()
