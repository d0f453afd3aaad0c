"""HTTP server of a replay: ``publish`` over HDF5-REST and live parameter changes.

Routes (reference §1.4, "Replay app"): the h5dict router at ``/`` and
``POST``/``GET /api/v1/parameter/{name}``.  A POSTed value is parsed through the parameter's
description when there is one, and takes effect for the next event.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from dranspose_fast.api.h5dict import router as h5dict_router
from dranspose_fast.parameters import ParameterBase
from dranspose_fast.protocol import HashDigest, ParameterName, WorkParameter
from dranspose_fast.usercode import ReducerHost

logger = logging.getLogger(__name__)


def create_app(
    reducer: ReducerHost, descriptions: dict[ParameterName, ParameterBase]
) -> FastAPI:
    app = FastAPI(title="dranspose-fast replay")
    app.state.get_data = reducer.get_data

    @app.post("/api/v1/parameter/{name}")
    async def post_parameter(name: ParameterName, request: Request) -> HashDigest:
        data = await request.body()
        param = WorkParameter(name=name, data=data)
        if name in descriptions:
            param.value = descriptions[name].from_bytes(data)  # type: ignore[attr-defined]
        reducer.parameters[name] = param
        reducer.parameters_version += 1
        logger.info("parameter %s set (%d bytes)", name, len(data))
        return HashDigest("")

    @app.get("/api/v1/parameter/{name}")
    async def get_parameter(name: ParameterName) -> Response:
        if name not in reducer.parameters:
            raise HTTPException(status_code=404, detail=f"parameter {name!r} is not set")
        return Response(reducer.parameters[name].data, media_type="application/x.bytes")

    app.include_router(h5dict_router)
    return app


class ReplayServer:
    """uvicorn in a background thread, bound to ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        reducer: ReducerHost,
        parameters: dict[ParameterName, WorkParameter],
        descriptions: dict[ParameterName, ParameterBase],
        host: str,
        port: int,
    ) -> None:
        del parameters  # the reducer host holds the live dict
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(f"cannot serve the replay on {host}:{port}: {exc.strerror}") from None
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(reducer, descriptions), log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="replay-http", daemon=True)

    def _serve(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"replay HTTP server on port {self.port} did not start")
            time.sleep(0.005)
        logger.info("serving publish on http://%s:%d/", self.host, self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def __enter__(self) -> ReplayServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
