"""Free TCP ports for servers that must be told their port before they start.

Asking the kernel for port 0 and closing the socket hands out a port of the *ephemeral* range,
the same range the kernel uses for the local end of every outgoing connection: between the
moment it is handed out and the moment the server binds it, any process that connects anywhere
(a Redis client, a ZMQ peer) can take it. So ports here come from below that range, where the
kernel never puts a connection on its own, walked in order from a random start (two processes
rarely walk the same stretch at the same moment, one process never hands a port out twice),
and each is checked by binding it on every interface.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

_LOWEST = 10000  # below this lie the registered ports of well-known services
_LINUX_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_LINUX_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's and the IANA-suggested range start below 49152 alike


class _PortWalk:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = -1
        self.next = 0

    def take(self) -> int:
        high = max(_ephemeral_start(), _LOWEST + 1000)
        span = high - _LOWEST
        with self.lock:
            if self.pid != os.getpid():  # a forked child walks its own stretch
                self.pid = os.getpid()
                self.next = random.randrange(span)
            for _ in range(span):
                port = _LOWEST + self.next % span
                self.next += 1
                if _bindable(port):
                    return port
        with socket.socket() as s:  # the whole range is taken: fall back to the kernel's pick
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    for host in ("0.0.0.0", "127.0.0.1"):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


_walk = _PortWalk()


def free_port() -> int:
    """A TCP port that nothing listens on and that the kernel will not use for a connection."""
    return _walk.take()
