"""Replay: run worker and reducer classes on recorded streams, without Redis or a network;
dranspose 0.2's ``dranspose.replay`` (``replay``, ``get_internals``, ``ParamList``, ...).

* ``run``: ``replay`` itself, its inputs (dumps merged by event) and its result file;
* ``dispatch``: which worker gets which event (spread, or bound by a trigger map);
* ``pool``: ``replay --processes``, the workers in processes (``dranspose_fast.worker``);
* ``report``, ``pacing``: what a replay did; its pace and progress bar;
* ``app``: the HTTP server of ``replay --keep-alive`` (``publish``, live parameters).
"""

from __future__ import annotations

from dranspose_fast.replay.report import ReplayReport
from dranspose_fast.replay.run import (
    ParamList,
    Streams,
    get_internals,
    get_parameters,
    logger,
    merge_by_event,
    open_inputs,
    replay,
    write_result,
)

__all__ = [
    "ParamList", "ReplayReport", "Streams", "get_internals", "get_parameters", "logger",
    "merge_by_event", "open_inputs", "replay", "write_result",
]
