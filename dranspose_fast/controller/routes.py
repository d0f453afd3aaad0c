"""REST API of the controller (the dranspose 0.2 paths, plus reactive scans).

``create_app(controller)`` serves a running ``Controller``; ``create_app(None, settings)``
creates one at startup and closes it at shutdown (deletes its keys), which is what
``uvicorn dranspose_fast.controller:app`` and ``controller.run`` use. Handlers that talk to
Redis are plain ``def`` so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import redis
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import UUID4, BaseModel, StrictStr
from starlette.concurrency import run_in_threadpool

from dranspose_fast import __version__
from dranspose_fast.api.guard import protect
from dranspose_fast.controller.answers import Progress, Status, WorkerLoad
from dranspose_fast.controller.engine import Controller
from dranspose_fast.controller.ensemble import ControllerSettings, EnsembleState, RequestError
from dranspose_fast.controller.scan import ScanState
from dranspose_fast.errors import MapError
from dranspose_fast.mapping import MappingSequence, Name, SequenceIn
from dranspose_fast.parameters import ParameterType
from dranspose_fast.protocol import HashDigest, ParameterName, StreamName
from dranspose_fast.runtime.metrics import CONTENT_TYPE, controller_families, exposition
from dranspose_fast.runtime.redis_messages import Keys
from dranspose_fast.runtime.settings import RestSettings

logger = logging.getLogger("dranspose_fast.controller.api")

#: Endpoints whose bodies may be large (trigger maps, parameter values such as masks).
LARGE_BODIES = ("/api/v1/sequence", "/api/v1/sequence/append", "/api/v1/mapping",
                "/api/v1/parameter/{name}")

#: The live status page served at ``/`` (plain HTML, JS and CSS; docs/status-page.md).
_STATIC = Path(__file__).resolve().parent / "static"

_EXAMPLE = {
    "parts": {
        "main": {
            "eiger": [[{"tags": ["generic"], "constraint": 1}],
                      [{"tags": ["generic"], "constraint": 2}]],
            "orca": [[{"tags": ["generic"], "constraint": 1}], None],
        }
    },
    "sequence": ["main", "main"],
}


class AppendIn(BaseModel):
    """Body of ``POST /api/v1/sequence/append``: new parts (optional) and names to append."""

    parts: dict[Name, dict[StrictStr, Any]] = {}
    sequence: list[Name]


class SequenceState(BaseModel):
    """Answer of the reactive-scan endpoints."""

    mapping_uuid: UUID4
    open: bool
    known_events: int
    total_events: int | None


def _state(scan: ScanState) -> SequenceState:
    return SequenceState(mapping_uuid=scan.uuid, open=not scan.seq.closed,
                         known_events=scan.seq.known_events,
                         total_events=scan.seq.total_events)


def _ctrl(request: Request) -> Controller:
    ctrl: Controller | None = request.app.state.ctrl
    if ctrl is None:
        raise HTTPException(503, "the controller is not running")
    return ctrl


Ctrl = Annotated[Controller, Depends(_ctrl)]


def create_app(controller: Controller | None = None,
               settings: ControllerSettings | None = None,
               rest: RestSettings | None = None) -> FastAPI:
    """The controller's FastAPI app.

    Parameters
    ----------
    controller : Controller, optional
        A started controller the app serves (the caller closes it). When None, the app
        creates and starts one from ``settings`` at startup and closes it at shutdown.
    settings : ControllerSettings, optional
        Used only when ``controller`` is None (default: from the environment).
    rest : RestSettings, optional
        Token, origins and body limits (docs/security.md; default: from the environment).
        The status page (``/``, ``/static/``) stays readable without a token, so it can ask
        for one.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = None
        if app.state.ctrl is None:
            owned = Controller(settings)
            # two controllers must never serve one redis: losing the lock ends this server
            owned.on_lock_lost = lambda: os.kill(os.getpid(), signal.SIGTERM)
            await anyio.to_thread.run_sync(owned.start)
            app.state.ctrl = owned
        try:
            yield
        finally:
            if owned is not None:
                app.state.ctrl = None
                await anyio.to_thread.run_sync(owned.close)

    app = FastAPI(title="dranspose-fast controller", version=__version__, lifespan=lifespan,
                  description="Trigger maps, parameters and scan progress of dranspose-fast.")
    app.state.ctrl = controller
    protect(app, rest, public=("/", "/static/"), large=LARGE_BODIES)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(MapError)
    async def _bad_map(request: Request, exc: MapError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(redis.RedisError)
    async def _no_redis(request: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"redis unavailable: {exc}"}, status_code=503)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The live status page; it links the API's docs at ``/docs``."""
        return FileResponse(_STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    _mapping_routes(app)
    _parameter_routes(app)
    _status_routes(app)
    return app


def _mapping_routes(app: FastAPI) -> None:
    @app.post("/api/v1/sequence")
    def set_sequence(ctrl: Ctrl, body: Annotated[SequenceIn, Body(examples=[_EXAMPLE])],
                     all_wrap: bool = True, open: bool = False) -> UUID4:
        """Start a scan with a sequence of parts; ``open=true`` keeps it open for appends."""
        seq = MappingSequence(body.parts, body.sequence, all_wrap=all_wrap, closed=not open)
        return ctrl.set_sequence(seq)

    @app.post("/api/v1/mapping", deprecated=True)
    def set_mapping(ctrl: Ctrl, mapping: dict[StrictStr, list[Any]],
                    all_wrap: bool = True) -> UUID4:
        """A single map ``{stream: [cells]}``, as the sequence ``[main]``."""
        return ctrl.set_sequence(MappingSequence.from_map(mapping, all_wrap=all_wrap))

    @app.post("/api/v1/sardana_hook", deprecated=True)
    def sardana_hook(ctrl: Ctrl, info: dict[StrictStr, Any]) -> UUID4 | str:
        """A uniform map of ``scan.nb_points`` events over the listed, available streams.

        As in 0.2 it needs no workers yet: the scan starts and waits for them.
        """
        if "scan" not in info or not isinstance(info["scan"], dict):
            return "no scan info"
        if "nb_points" not in info["scan"]:
            return "no nb_points in scan"
        if "streams" not in info or not isinstance(info["streams"], list):
            return "streams required"
        streams = sorted(set(ctrl.configs().get_streams()) & set(map(str, info["streams"])))
        seq = MappingSequence.from_uniform(streams, info["scan"]["nb_points"], part="sardana")
        return ctrl.set_sequence(seq, require_workers=False)

    @app.get("/api/v1/sequence")
    def get_sequence(ctrl: Ctrl) -> dict[str, Any]:
        return ctrl.sequence_json()

    @app.get("/api/v1/mapping", deprecated=True)
    def get_mapping(ctrl: Ctrl) -> dict[str, Any]:
        return ctrl.sequence_json()

    @app.post("/api/v1/sequence/append")
    def append(ctrl: Ctrl, body: AppendIn) -> SequenceState:
        """Append part instances to the running open sequence (reactive scans)."""
        return _state(ctrl.append(dict(body.parts), list(body.sequence)))

    @app.post("/api/v1/sequence/close")
    def close_sequence(ctrl: Ctrl) -> SequenceState:
        """Close the running open sequence: the scan can finish."""
        return _state(ctrl.close_sequence())

    @app.post("/api/v1/stop")
    def stop(ctrl: Ctrl) -> None:
        """End the running scan (reason "stopped")."""
        ctrl.stop()


def _parameter_routes(app: FastAPI) -> None:
    @app.post("/api/v1/parameter/{name}")
    async def post_param(ctrl: Ctrl, name: ParameterName, request: Request) -> HashDigest:
        """The raw request body becomes the parameter's value; returns the parameters hash."""
        data = await request.body()
        return await run_in_threadpool(ctrl.set_param, name, data)

    @app.get("/api/v1/parameter/{name}", response_class=Response,
             responses={200: {"content": {"application/x.bytes": {}}}})
    def get_param(ctrl: Ctrl, name: ParameterName) -> Response:
        data = ctrl.get_param(name)
        if data is None:
            raise HTTPException(404, f"parameter {name!r} is not set")
        return Response(data, media_type="application/x.bytes")

    @app.get("/api/v1/parameters")
    def parameters(ctrl: Ctrl) -> list[ParameterType]:
        return ctrl.describe_parameters()


def _status_routes(app: FastAPI) -> None:
    @app.get("/api/v1/config")
    def config(ctrl: Ctrl) -> EnsembleState:
        return ctrl.configs()

    @app.get("/api/v1/streams")
    def streams(ctrl: Ctrl) -> list[StreamName]:
        """Streams a map may use now (reached by every worker)."""
        return ctrl.configs().get_streams()

    @app.get("/api/v1/progress")
    def progress(ctrl: Ctrl) -> Progress:
        return ctrl.progress()

    @app.get("/api/v1/status")
    def status(ctrl: Ctrl) -> Status:
        return ctrl.status()

    @app.get("/api/v1/load")
    def load(ctrl: Ctrl, intervals: Annotated[list[int] | None, Query()] = None,
             scan: bool = True) -> dict[str, WorkerLoad]:
        """Per worker: events processed and events/s over the last ``intervals`` seconds."""
        return ctrl.load(intervals if intervals is not None else [1, 10], scan)

    @app.get("/api/v1/logs")
    def logs(ctrl: Ctrl, level: str = "INFO") -> list[dict[str, str]]:
        return ctrl.logs(level)

    @app.get("/api/v1/log_stream")
    async def log_stream(ctrl: Ctrl, request: Request,
                         max_seconds: float | None = None) -> StreamingResponse:
        """New ``dfast:logs`` entries as NDJSON (until the client leaves or ``max_seconds``)."""
        return StreamingResponse(_log_lines(ctrl, request, max_seconds),
                                 media_type="application/x-ndjson")

    @app.get("/metrics", include_in_schema=False)
    def metrics(ctrl: Ctrl) -> Response:
        """The Prometheus text format (docs/metrics.md); answers while Redis is away too."""
        try:
            status: dict[str, Any] | None = ctrl.status().model_dump()
        except redis.RedisError:
            status = None
        return Response(exposition(controller_families(status)), media_type=CONTENT_TYPE)


async def _log_lines(ctrl: Controller, request: Request,
                     max_seconds: float | None) -> AsyncIterator[str]:
    latest: Any = await anyio.to_thread.run_sync(
        lambda: ctrl.redis.xrevrange(Keys.LOGS, count=1))
    last: bytes | str = latest[0][0] if latest else "0-0"
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while deadline is None or time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        try:
            entries: Any = await anyio.to_thread.run_sync(_read_logs, ctrl, last)
        except redis.RedisError:
            await anyio.sleep(0.5)
            continue
        for _key, items in entries or []:
            for entry_id, fields in items:
                last = entry_id
                yield json.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                                  for k, v in fields.items()}) + "\n"


def _read_logs(ctrl: Controller, last: bytes | str) -> Any:
    return ctrl.redis.xread({Keys.LOGS: last}, count=100, block=300)


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # module-level ``app``, built on first access from the environment's settings
    global _app
    if name == "app":
        if _app is None:
            _app = create_app(None)
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
