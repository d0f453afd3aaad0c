"""The worker role: dranspose 0.2's ``dranspose.worker`` (``Worker``, ``WorkerSettings``, ...).

* ``service``: the networked ``Worker`` (sockets, threads, Redis);
* ``parts``: its pieces that hold no sockets and no threads (assembly, peer discovery);
* ``peers``: its ZeroMQ links to the ingesters and the reducer;
* ``replay_process``: the worker process a replay runs (``replay --processes``).
"""

from __future__ import annotations

from dranspose_fast.runtime.settings import WorkerSettings, random_worker_name
from dranspose_fast.worker.replay_process import (
    CREDIT,
    DONE,
    FINISH,
    HELLO,
    PARAMETERS,
    BatchWorker,
    new_shared_tick,
    run_pool_worker,
)
from dranspose_fast.worker.service import RedisException, Worker, WorkerServiceState

__all__ = [
    "CREDIT", "DONE", "FINISH", "HELLO", "PARAMETERS", "BatchWorker", "RedisException",
    "Worker", "WorkerServiceState", "WorkerSettings", "new_shared_tick",
    "random_worker_name", "run_pool_worker",
]
