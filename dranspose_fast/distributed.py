"""dranspose 0.2's ``dranspose.distributed``: the base of every service and its settings.

The code lives in ``dranspose_fast.runtime`` (``service.py``, ``settings.py``); this module keeps
0.2's path and names.
"""

from __future__ import annotations

from dranspose_fast.runtime.service import Service
from dranspose_fast.runtime.settings import DistributedSettings

#: 0.2's name for the base of the ingester, worker and reducer services.  Ours runs threads,
#: not asyncio: ``run()`` and ``close()`` are plain methods (docs/compatibility.md).
DistributedService = Service

__all__ = ["DistributedService", "DistributedSettings"]
