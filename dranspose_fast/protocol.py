"""Names and pydantic models shared by every component (the dranspose 0.2 surface).

These are the models users and deployments touch: names, virtual workers, parameters,
assignments and component states.  The internal wire formats (packed batches, binary
assignment batches) are not pydantic models; they live with the code that moves them.
"""

from __future__ import annotations

import datetime
import time
import uuid
from enum import Enum
from typing import Annotated, NewType

from pydantic import UUID4, BaseModel, Field, TypeAdapter, UrlConstraints
from pydantic_core import Url

from dranspose_fast.errors import DransposeFastError

__all__ = [
    "GENERIC_WORKER", "BuildGitMeta", "ConnectedWorker", "DistributedState",
    "DistributedStateEnum", "EnsembleState", "EventNumber", "HashDigest", "IngesterName",
    "IngesterState", "MappingName", "ParameterName", "ProtocolException", "ReducerState",
    "ResumedStream", "StreamName", "VirtualConstraint", "VirtualWorker", "WorkAssignment",
    "WorkAssignmentList", "WorkParameter", "WorkerName", "WorkerState", "WorkerTag", "ZmqUrl",
]

ZmqUrl = Annotated[Url, UrlConstraints(allowed_schemes=["tcp", "ipc", "inproc"])]

StreamName = NewType("StreamName", str)
WorkerName = NewType("WorkerName", str)
WorkerTag = NewType("WorkerTag", str)
IngesterName = NewType("IngesterName", str)
VirtualConstraint = NewType("VirtualConstraint", int)
EventNumber = NewType("EventNumber", int)
ParameterName = NewType("ParameterName", str)
HashDigest = NewType("HashDigest", str)
MappingName = NewType("MappingName", str)

GENERIC_WORKER = WorkerTag("generic")


class VirtualWorker(BaseModel):
    """A slot of a trigger-map cell.

    ``tags``: the real worker's tags must include all of these.
    ``constraint``: cells with the same constraint (within one part instance) go to the same
    real worker; ``None`` means every worker whose tags cover ``tags`` (a broadcast).
    """

    tags: set[WorkerTag] = {GENERIC_WORKER}
    constraint: VirtualConstraint | None = None


class WorkParameter(BaseModel):
    """One parameter value: raw ``data`` bytes plus the parsed ``value``."""

    name: str
    data: bytes
    value: int | str | bytes | float | bool | None = None
    uuid: UUID4 = Field(default_factory=uuid.uuid4)


class WorkAssignment(BaseModel):
    """Which workers get each stream's frame of one event (a missing stream: no frame)."""

    event_number: EventNumber
    assignments: dict[StreamName, list[WorkerName]]

    def get_workers_for_streams(self, streams: list[StreamName]) -> WorkAssignment:
        return WorkAssignment(
            event_number=self.event_number,
            assignments={s: self.assignments[s] for s in streams if s in self.assignments},
        )

    def get_all_workers(self) -> set[WorkerName]:
        return {w for workers in self.assignments.values() for w in workers}


#: Validates a JSON list of assignments (0.2 name).
WorkAssignmentList: TypeAdapter[list[WorkAssignment]] = TypeAdapter(list[WorkAssignment])


class ProtocolException(DransposeFastError):
    """0.2's name for a protocol violation; kept so user code that catches it imports."""


class DistributedStateEnum(Enum):
    READY = "ready"
    IDLE = "idle"
    FINISHED = "finished"


class BuildGitMeta(BaseModel):
    """Build metadata of the user's analysis code (``BUILD_META_FILE``)."""

    commit_hash: HashDigest
    branch_name: str
    timestamp: datetime.datetime
    repository_url: Url


class DistributedState(BaseModel):
    service_uuid: UUID4 = Field(default_factory=uuid.uuid4)
    mapping_uuid: UUID4 | None = None
    dranspose_version: str | None = None
    mapreduce_version: BuildGitMeta | None = None
    parameters_hash: HashDigest | None = None
    processed_events: int = 0
    event_rate: float = 0.0


class ConnectedWorker(BaseModel):
    name: WorkerName
    service_uuid: UUID4
    last_seen: float = Field(default_factory=time.time)


class ResumedStream(BaseModel):
    """A stream a restarted ingester resumed mid-scan (docs/protocol.md, "Ingester resume")."""

    mapping_uuid: UUID4
    #: Rows of the stream filled with lost placeholders: the ones the ingester's previous
    #: process took from upstream (delivered, or lost with it; the workers count which).
    skipped: int
    #: True: the position came from the protocol's own frame numbers, the loss is exact.
    #: False: the protocol has none; the position is the last one saved, the loss unknown.
    exact: bool


class IngesterState(DistributedState):
    name: IngesterName
    url: ZmqUrl
    connected_workers: dict[UUID4, ConnectedWorker] = {}
    streams: list[StreamName] = []
    #: Where workers on the same host connect instead of ``url``: an ``ipc://`` socket in a
    #: directory only the ingester's user may enter (no CURVE needed on that hop), and the
    #: host's boot id and network namespace that say where it is (docs/security.md, "The
    #: local hop").
    local_url: str | None = None
    host_id: str | None = None
    #: Events the ingester keeps after sending them until they are released (0: it keeps
    #: none, and a lost worker's events cannot be resent; docs/protocol.md).
    retention_events: int = 0
    #: Streams resumed after a restart of this ingester, in the scan it joined.
    resumed: dict[StreamName, ResumedStream] = {}


class WorkerState(DistributedState):
    name: WorkerName
    ingesters: list[IngesterState] = []
    tags: set[WorkerTag] = {GENERIC_WORKER}


class ReducerState(DistributedState):
    name: str = "reducer"
    url: ZmqUrl


class EnsembleState(BaseModel):
    """What ``GET /api/v1/config`` answers: every live component's published state.

    Validate the controller's JSON with it (``EnsembleState.model_validate(r.json())``), as 0.2
    clients do; the components' extra counters are ignored here.
    """

    ingesters: list[IngesterState]
    workers: list[WorkerState]
    reducer: ReducerState | None
    controller_version: str | None = None
    parameters_version: dict[ParameterName, UUID4] = {}
    parameters_hash: HashDigest | None = None

    def get_streams(self) -> list[StreamName]:
        """Streams some ingester offers and every worker is connected to (sorted)."""
        streams = {s for i in self.ingesters for s in i.streams}
        for worker in self.workers:
            streams &= {s for i in worker.ingesters for s in i.streams}
        return sorted(streams)

    def get_workers(self) -> list[WorkerName]:
        """The names of the live workers."""
        return [w.name for w in self.workers]
