"""HTTP server of a replay: ``publish`` over HDF5-REST and live parameter changes.

Routes (those of 0.2's replay app): the h5dict router at ``/`` and
``POST``/``GET /api/v1/parameter/{name}``.  A POSTed value is parsed through the parameter's
description when there is one, and takes effect for the next event. The token, origin and
body-size rules of ``DFAST_REST_*`` apply (docs/security.md), as on the controller.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from dranspose_fast.api.guard import protect
from dranspose_fast.api.h5dict import router as h5dict_router
from dranspose_fast.api.server import HttpThread
from dranspose_fast.parameters import ParameterBase
from dranspose_fast.protocol import HashDigest, ParameterName, WorkParameter
from dranspose_fast.runtime.usercode import ReducerHost

logger = logging.getLogger(__name__)


def create_app(
    reducer: ReducerHost, descriptions: dict[ParameterName, ParameterBase]
) -> FastAPI:
    app = FastAPI(title="dranspose-fast replay")
    protect(app, reads=("/datasets/{uuid}/value",), large=("/api/v1/parameter/{name}",))
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


class ReplayServer(HttpThread):
    """The replay's HTTP server on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        reducer: ReducerHost,
        descriptions: dict[ParameterName, ParameterBase],
        host: str,
        port: int,
    ) -> None:
        try:
            super().__init__(create_app(reducer, descriptions), host, port)
        except OSError as exc:
            raise OSError(f"cannot serve the replay: {exc}") from None

    def start(self, timeout: float = 10.0) -> ReplayServer:
        super().start(timeout)
        logger.info("serving publish on %s", self.url)
        return self
