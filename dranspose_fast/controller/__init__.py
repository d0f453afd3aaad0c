"""The controller role: dranspose 0.2's ``dranspose.controller`` (``Controller``,
``ControllerSettings``, the ASGI ``app`` of ``uvicorn dranspose_fast.controller:app``).

* ``engine``: the ``Controller`` (lock, scans, binding loop, parameters, dumps);
* ``scan``: the bookkeeping of one scan (progress, losses, loads) and the writing of its dumps;
* ``ensemble``: settings, the lock, the reading of component configs and parameter descriptions;
* ``routes``: the REST API (``create_app``), served by ``run`` and the module-level ``app``.
"""

from __future__ import annotations

import logging
from typing import Any

from dranspose_fast.controller.answers import IntervalLoad, Progress, Status, WorkerLoad
from dranspose_fast.controller.engine import Controller
from dranspose_fast.controller.ensemble import (
    ControllerError,
    ControllerLockError,
    ControllerSettings,
    EnsembleState,
    RequestError,
)

__all__ = [
    "Controller", "ControllerError", "ControllerLockError", "ControllerSettings",
    "EnsembleState", "IntervalLoad", "Progress", "RequestError", "Status", "WorkerLoad",
    "logger", "run",
]

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    # ``uvicorn dranspose_fast.controller:app``: built on first access, from the environment
    if name == "app":
        from dranspose_fast.controller import routes

        return routes.app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(host: str = "127.0.0.1", port: int = 5000,
        settings: ControllerSettings | None = None, log_level: str = "info") -> None:
    """Serve the controller's REST API with uvicorn until SIGTERM/SIGINT (closes cleanly)."""
    import uvicorn

    from dranspose_fast.controller.routes import create_app

    uvicorn.run(create_app(None, settings), host=host, port=port, log_level=log_level)
