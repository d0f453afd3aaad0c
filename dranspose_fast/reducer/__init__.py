"""The reducer role: dranspose 0.2's ``dranspose.reducer`` (``Reducer``, ``ReducerSettings``, the
ASGI ``app`` of ``uvicorn dranspose_fast.reducer:app``).

* ``service``: the networked ``Reducer``, its HTTP app and ``run``.
"""

from __future__ import annotations

from dranspose_fast.reducer.service import Reducer, app, create_app, run
from dranspose_fast.runtime.settings import ReducerSettings

__all__ = ["Reducer", "ReducerSettings", "app", "create_app", "run"]
