"""uvicorn serving a FastAPI app in a background thread (reducer, debug worker, replay)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI


class HttpThread:
    """uvicorn serving ``app`` in a daemon thread on ``host:port`` (0 picks a free port)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(f"cannot serve HTTP on {host}:{port}: {exc.strerror}") from None
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        # Not the main thread: uvicorn leaves the process's signal handlers alone.
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=lambda: self.server.run(sockets=[self.sock]), name="http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> HttpThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"HTTP server on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> HttpThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
