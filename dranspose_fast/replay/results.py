"""How a replay reads its workers' results: as the live reducer does, data only."""

from __future__ import annotations

import logging
from typing import Any

from dranspose_fast.helpers.safe_pickle import AllowList
from dranspose_fast.runtime.usercode import ReducerHost

logger = logging.getLogger(__name__)

#: ``read_result``'s answer for a refused result.
REFUSED: Any = object()


def read_result(payload: Any, allowed: AllowList, reducer: ReducerHost, worker: str,
                evn: int) -> Any:
    """A worker's pickled result as the live reducer reads it (``dataplane.decode_result``:
    plain data, numpy and the classes of ``DFAST_RESULT_CLASSES``); ``REFUSED`` when it is
    anything else: counted as a reducer error, logged for the 1st, 2nd, 4th, ... one."""
    try:
        # imported here: reading dumps (replay.get_internals) must not need the data plane's
        # dependencies (msgspec), as in dranspose 0.2's environment
        from dranspose_fast.runtime import dataplane

        return dataplane.decode_result(payload, allowed)
    except Exception as exc:
        counters = reducer.counters
        counters.errors += 1
        counters.last_error = f"result {evn} of {worker} refused: {exc}"
        if counters.errors & (counters.errors - 1) == 0:
            logger.error("replay: %s", counters.last_error)
        return REFUSED
