"""A STINS (stream1) upstream for tests: PUSHes header, images and series end over ZeroMQ.

``StinsSource(url_or_port, shape, dtype, n)`` binds a PUSH socket (an int is a loopback TCP
port) that ingesters connect to (``.url``).  Every method takes a lock, so a series can be
sent from a thread (``send_series_in_thread``) while the test drives other sockets; the
socket is used by one thread at a time.  Image ``i`` is ``image(i)``: filled with ``i``, so
receivers can check content.  ``msg_number`` counts every message sent, as the
streaming-receiver does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq


class StinsSource:
    """PUSH a STINS series: ``send_header()``, ``send_image(i)``..., ``send_end()``."""

    def __init__(
        self,
        url_or_port: str | int,
        shape: Sequence[int] = (4, 4),
        dtype: str = "uint16",
        n: int = 10,
        *,
        socket_type: int = zmq.PUSH,
        linger_ms: int = 2000,
        record: bool = False,
    ) -> None:
        if isinstance(url_or_port, int):
            bind = f"tcp://127.0.0.1:{url_or_port}"
        else:
            bind = url_or_port
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.n = n
        self.ctx = zmq.Context()
        self.socket = self.ctx.socket(socket_type)
        self.socket.setsockopt(zmq.LINGER, linger_ms)
        self.socket.bind(bind)
        self.url = self.socket.getsockopt_string(zmq.LAST_ENDPOINT).replace("0.0.0.0", "127.0.0.1")
        self.msg_number = 0
        self.sent = 0
        #: Every message sent, when constructed with ``record=True``.
        self.messages: list[list[bytes]] = []
        self.record = record
        self._lock = threading.Lock()

    # === messages ===

    def image(self, i: int) -> np.ndarray[Any, Any]:
        """The payload of image ``i``."""
        return np.full(self.shape, i % (1 << min(8 * self.dtype.itemsize - 1, 31)),
                       dtype=self.dtype)

    def header_frames(self, filename: str = "/tmp/test.h5") -> list[bytes]:
        return [json.dumps({"htype": "header", "msg_number": self.msg_number,
                            "filename": filename}).encode()]

    def image_frames(self, i: int) -> list[bytes]:
        head = {"htype": "image", "msg_number": self.msg_number, "frame": i,
                "shape": list(self.shape), "type": self.dtype.name, "compression": "none"}
        return [json.dumps(head).encode(), self.image(i).tobytes()]

    def end_frames(self) -> list[bytes]:
        return [json.dumps({"htype": "series_end", "msg_number": self.msg_number}).encode()]

    # === sending ===

    def _send(self, frames: list[bytes]) -> None:
        # Called with the lock held.
        self.socket.send_multipart(frames)
        self.msg_number += 1
        self.sent += 1
        if self.record:
            self.messages.append(frames)

    def send_raw(self, frames: Sequence[bytes]) -> None:
        """Send any multipart message (junk, malformed headers...)."""
        with self._lock:
            self._send(list(frames))

    def send_header(self, filename: str = "/tmp/test.h5") -> None:
        with self._lock:
            self._send(self.header_frames(filename))

    def send_image(self, i: int) -> None:
        with self._lock:
            self._send(self.image_frames(i))

    def send_end(self) -> None:
        with self._lock:
            self._send(self.end_frames())

    def send_series(self, n: int | None = None, delay: float = 0.0) -> None:
        """Header, ``n`` images (default: the constructor's ``n``), series end."""
        self.send_header()
        for i in range(self.n if n is None else n):
            self.send_image(i)
            if delay:
                time.sleep(delay)
        self.send_end()

    def send_series_in_thread(self, n: int | None = None, delay: float = 0.0) -> threading.Thread:
        """``send_series`` in a daemon thread (join it before ``close``)."""
        thread = threading.Thread(target=self.send_series, args=(n, delay), daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        with self._lock:
            self.socket.close()
        self.ctx.term()

    def __enter__(self) -> StinsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
