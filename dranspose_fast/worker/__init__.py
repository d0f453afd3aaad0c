"""The worker role: dranspose 0.2's ``dranspose.worker`` (``Worker``, ``WorkerSettings``, ...).

* ``service``: the networked ``Worker`` (sockets, threads, Redis);
* ``parts``: its pieces that hold no sockets and no threads (assembly, peer discovery);
* ``peers``: its ZeroMQ links to the ingesters and the reducer;
* ``replay_process``: the worker process a replay runs (``replay --processes``).
"""

from __future__ import annotations

from dranspose_fast.runtime.settings import WorkerSettings, random_worker_name
from dranspose_fast.worker.replay_process import run_pool_worker as run_pool_worker
from dranspose_fast.worker.service import RedisException, Worker

__all__ = ["RedisException", "Worker", "WorkerSettings", "random_worker_name"]

# ``run_pool_worker`` (above) is the replay pool's hook (``dranspose_fast.replay.pool``), not a
# user's name: it is re-exported for the package and kept out of ``__all__``.
