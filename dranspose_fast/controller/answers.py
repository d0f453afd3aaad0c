"""What the controller answers about a scan (pydantic models, also the OpenAPI schema):
``/progress``, ``/status`` and ``/load``. Built by ``scan.ScanState``; every answer has a size
independent of the scan length."""

from __future__ import annotations

from pydantic import UUID4, BaseModel


class Progress(BaseModel):
    """``GET /api/v1/progress`` (the dranspose 0.2 keys)."""

    last_assigned: int = 0
    completed_events: int = 0
    total_events: int | None = 0
    finished: bool = False


class WorkerStatus(BaseModel):
    tags: list[str]
    granted: int
    processed: int
    results: int
    reduced: int
    errors: int
    deliveries: int
    outstanding: int
    credit: int
    pending: int


class LostWorker(BaseModel):
    """A worker that died mid-scan (its config expired, or it came back as a new process).

    With retention on every ingester, its unreleased deliveries go to ``rebound_to`` and
    nothing is lost; otherwise the events it had not processed are lost.
    """

    processed: int
    deliveries: int
    events_lost: int
    lost_events: list[int]
    constraints_rebound: int
    at: float
    events_rebound: int = 0
    rebound_to: str | None = None


class UpstreamLoss(BaseModel):
    """Events of one stream lost in an ingester restart (docs/protocol.md, "Ingester resume").

    ``events`` counts the events the workers dropped because a placeholder stood for the
    stream's frame; ``exact`` is false when the protocol has no frame numbers: the resumed
    position was the last one saved, so frames after it may have been lost uncounted.
    """

    events: int
    first_events: list[int]
    exact: bool = True


class Binding(BaseModel):
    part: str
    instance: int
    constraint: int
    worker: str
    first_event: int


class RecentEvent(BaseModel):
    event: int
    streams: dict[str, list[str] | None]


class ReducerStatus(BaseModel):
    reduced: int
    errors: int


class StallReport(BaseModel):
    """``/api/v1/status`` ``stalled``: how long the scan made no progress, and why."""

    seconds: float
    waiting_for: list[str]


class Status(BaseModel):
    """``GET /api/v1/status``: a bounded summary of the current scan."""

    mapping_uuid: UUID4 | None = None
    finished: bool = False
    reason: str | None = None
    open: bool = False
    last_assigned: int = 0
    completed_events: int = 0
    total_events: int | None = 0
    known_events: int = 0
    batches: int = 0
    workers: dict[str, WorkerStatus] = {}
    lost_workers: dict[str, LostWorker] = {}
    reducer: ReducerStatus | None = None
    components: dict[str, dict[str, float]] = {}
    counters: dict[str, int] = {}
    #: Data lost, summed over the live components by role and counter (``loss_totals``).
    dropped: dict[str, int] = {}
    dropped_total: int = 0
    recent_bindings: list[Binding] = []
    recent_events: list[RecentEvent] = []
    #: Set while the scan has events pending and made no progress for ``stall_timeout``.
    stalled: StallReport | None = None
    #: Per stream, events lost because an ingester restarted mid-scan.
    lost_upstream: dict[str, UpstreamLoss] = {}
    #: Workers that take no events: their class failed to load or start (name: the error).
    not_ready_workers: dict[str, str] = {}


class IntervalLoad(BaseModel):
    events: int
    seconds: float
    rate: float


class WorkerLoad(BaseModel):
    last_event: int | None
    intervals: dict[str, IntervalLoad]


