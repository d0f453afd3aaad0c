"""The ingester role: dranspose 0.2's ``dranspose.ingester`` (``Ingester``, ``IngesterSettings``,
``IsSoftwareTriggered``) and the base of the built-in ingesters (``dranspose_fast.ingesters``).

* ``service``: the ``Ingester`` service (threads, the data loop, the extension API);
* ``sources``: where frames come from (upstream sockets and their settings, user generators)
  and the counters;
* ``routing``: the assignment batches applied to the frames, the batches sent to the workers;
* ``framing``: the base of the built-in protocol ingesters (one upstream socket, a framer).
"""

from __future__ import annotations

from dranspose_fast.ingester.service import (
    Ingester,
    IngesterSettings,
    IngesterStatus,
    IsSoftwareTriggered,
)
from dranspose_fast.ingester.sources import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_FRAME_BYTES,
    IngesterCounters,
    UpstreamSettings,
    UpstreamSource,
    hwm_messages,
)

__all__ = [
    "DEFAULT_BUFFER_BYTES", "DEFAULT_FRAME_BYTES", "Ingester",
    "IngesterCounters", "IngesterSettings", "IngesterStatus", "IsSoftwareTriggered",
    "UpstreamSettings", "UpstreamSource", "hwm_messages",
]
