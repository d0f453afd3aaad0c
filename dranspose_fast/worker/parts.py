"""Pieces of the networked worker that hold no sockets and no threads.

Event assembly, picking this worker's events out of an assignment batch, and the commands
other threads
post to the data thread (``BeginScan``, ``NewParameters``, ``FinishScan``, ``EndScan``,
``Assign``, ``IngestersFound``, ``ReducerFound``). ``service.Worker``
wires them to ZeroMQ and Redis; here they are plain objects, tested on their own.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dranspose_fast import _assemble
from dranspose_fast.event import EventData, StreamData
from dranspose_fast.protocol import IngesterState, ReducerState, WorkerState
from dranspose_fast.runtime.redis_messages import (
    AssignmentBatch,
    ControlEntry,
    Joined,
    Rebind,
    decode_entry,
)
from dranspose_fast.runtime.service import Entry
from dranspose_fast.runtime.usercode import WorkerHost
from dranspose_fast.worker.upstream_loss import UpstreamLosses

__all__ = [
    "Assembler", "NoClass", "PartialEvent", "ScanState", "ServiceCounters",
    "WorkerServiceState", "command_for", "commands_for", "events_for",
]

PartialEvent = tuple[int, dict[str, StreamData]]


# === Commands to the data thread (``runtime.commands.CommandQueue``) ===


@dataclass(frozen=True, slots=True)
class BeginScan:
    """A controller update with a new mapping (updates thread)."""

    mapping_uuid: uuid.UUID
    finished: bool
    parameters: Any
    phash: str
    #: The scan was running when this process started (it joins late, perhaps restarted).
    late: bool = False


@dataclass(frozen=True, slots=True)
class NewParameters:
    """New parameter values for the scan ``mapping_uuid`` (updates thread)."""

    mapping_uuid: uuid.UUID
    parameters: Any
    phash: str


@dataclass(frozen=True, slots=True)
class FinishScan:
    """The scan ``mapping_uuid`` is over (updates thread)."""

    mapping_uuid: uuid.UUID


@dataclass(frozen=True, slots=True)
class EndScan:
    """Redis came back empty: whatever scan runs is over."""


@dataclass(frozen=True, slots=True)
class Assign:
    """This worker's events of an assignment batch (maybe none), the streams of each, and
    the end of the batch: no later delivery is below it (assignments)."""

    mapping_uuid: uuid.UUID
    events: list[int]
    counts: list[int]
    end: int


@dataclass(frozen=True, slots=True)
class JoinedScan:
    """The controller registered this process: assignments to its name count from here."""

    mapping_uuid: uuid.UUID


@dataclass(frozen=True, slots=True)
class TakeOver:
    """A lost worker's deliveries rebound to this worker (assignments)."""

    mapping_uuid: uuid.UUID
    entry: Rebind


@dataclass(frozen=True, slots=True)
class IngestersFound:
    """The ingester configs discovery read (discovery thread)."""

    found: dict[str, IngesterState]


@dataclass(frozen=True, slots=True)
class ReducerFound:
    """The reducer's config, or ``None`` while there is none (discovery thread)."""

    reducer: ReducerState | None


Command = (BeginScan | NewParameters | FinishScan | EndScan | Assign | JoinedScan | TakeOver
           | IngestersFound | ReducerFound)


class WorkerServiceState(WorkerState):
    """``WorkerState`` plus the counters a worker publishes in its config."""

    results_sent: int = 0
    user_errors: int = 0
    malformed_batches: int = 0
    dropped_old_scan: int = 0
    #: Batches for this name that came before this process joined a running scan: its
    #: previous process's, which the controller rebinds (not a loss here).
    batches_before_join: int = 0
    duplicate_streams: int = 0
    bad_assignments: int = 0
    bad_configs: int = 0
    class_errors: int = 0
    class_error: str | None = None
    ingester_reconnects: int = 0
    results_queued: int = 0
    waiting_events: int = 0
    event_batches: int = 0
    result_messages: int = 0
    credit_failures: int = 0
    bytes_received: int = 0
    credits_granted: int = 0
    credits_ungranted: int = 0
    #: Events of the scan dropped because a restarted ingester lost their data.
    dropped_lost_upstream: int = 0
    busy_seconds: float = 0.0
    #: Busy time / wall time of the data thread, last ``runtime.metrics.DUTY_WINDOW`` s.
    duty_cycle: float = 0.0


class NoClass:
    """Stand-in when no worker class is given or it cannot be loaded: no results."""

    def process_event(self, event: Any, parameters: Any) -> None:
        return None


class Assembler:
    """Merges partial events once the assignment says how many streams each event has.

    The merge and the construction of each complete ``EventData`` run compiled
    (``_assemble``); this class holds the state and the counters.
    """

    def __init__(self) -> None:
        self.expected: dict[int, int] = {}
        self.pending: dict[int, dict[str, StreamData]] = {}
        self.duplicates = 0
        self.stale = 0

    def expect(self, events: list[int], counts: list[int]) -> list[EventData]:
        """Record assignments; return the events whose data had already arrived in full."""
        ready: list[EventData] = []
        _assemble.expect(events, counts, self.expected, self.pending, ready)
        return ready

    def add(self, events: list[PartialEvent]) -> list[EventData]:
        """Add received partial events; return those now complete, in arrival order."""
        ready: list[EventData] = []
        self.duplicates += _assemble.add(events, self.expected, self.pending, ready)
        return ready

    def leftovers(self) -> tuple[int, int]:
        """Partial events at the end of a scan: assigned here but never complete (lost),
        and never assigned here (another process's under this name)."""
        incomplete = sum(1 for evn in self.pending if evn in self.expected)
        return incomplete, len(self.pending) - incomplete

    @property
    def waiting(self) -> int:
        """Events assigned or partly received but not complete."""
        return len(self.expected) + len(self.pending)

    def done_below(self, upto: int) -> int:
        """Every delivery below this is processed: the first one still expected, at most
        ``upto`` (the end of the assignments read). Drops partials below it that no
        assignment expects (sent to an earlier process of this name; resent to its
        successor) and returns how many in ``stale``."""
        done = min(min(self.expected, default=upto), upto)
        stale = [evn for evn in self.pending if evn < done and evn not in self.expected]
        for evn in stale:
            del self.pending[evn]
        self.stale += len(stale)
        return done


@dataclass
class ServiceCounters:
    """A worker's counters across scans (published in its config)."""

    processed: int = 0
    results: int = 0
    errors_done: int = 0  # user errors of ended scans
    malformed: int = 0
    old_scan: int = 0
    before_join: int = 0
    bad_assignments: int = 0
    bad_configs: int = 0
    duplicates_done: int = 0
    batches: int = 0
    result_messages: int = 0
    bytes_received: int = 0
    credits_granted: int = 0
    #: Scans this process started.
    scans: int = 0

    def unused(self, scan: ScanState | None, batches: int) -> None:
        """Batches that came while no scan could take them: an earlier scan's leftovers, or
        (before this process joined a running scan) the previous process's under its name,
        which the controller rebinds."""
        if (scan.late if scan is not None else self.scans == 0):
            self.before_join += batches
        else:
            self.old_scan += batches


@dataclass
class ScanState:
    """What a worker holds for the scan it is in; owned by the data thread."""

    uuid: uuid.UUID
    host: WorkerHost
    phash: str
    credit_key: str
    sync_deadline: float
    assembler: Assembler = field(default_factory=Assembler)
    syncing: bool = True
    finished: bool = False
    #: Joined while the scan ran: what arrives before its sync was for an earlier process.
    late: bool = False
    #: The controller's ``Joined`` entry for this process was read: assignments count.
    joined: bool = False
    #: End of the last assignment batch read (no later delivery is below it).
    assigned_upto: int = 0
    initial_granted: bool = False
    ungranted: int = 0
    first_ungranted: float = 0.0
    processed: int = 0
    results: int = 0
    #: Events a restarted ingester lost data of (``worker.upstream_loss``).
    losses: UpstreamLosses = field(default_factory=UpstreamLosses)
    out: list[tuple[int, bytes]] = field(default_factory=list)  # results of this loop pass
    #: Results of events taken over from lost workers, by origin (sent apart, tagged).
    rebound_out: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    #: Oldest ingester stamp of the event batches received since the last result batch, and
    #: the stamp that batch carried.
    arrival: float = math.inf
    sent_arrival: float = math.inf

    def take_arrival(self) -> float:
        """The stamp of the result batch about to leave: the oldest since the last one, else
        the last one's (its events' data came in batches received before)."""
        if self.arrival < math.inf:
            self.sent_arrival, self.arrival = self.arrival, math.inf
        return self.sent_arrival


def command_for(uid: uuid.UUID, entry: AssignmentBatch | ControlEntry, name: str,
                service: str) -> Command | None:
    """What the data thread of worker ``name`` (process ``service``) must do with an entry
    of the scan ``uid``'s assignment stream (``ValueError`` for a batch it cannot read)."""
    if isinstance(entry, AssignmentBatch):
        return Assign(uid, *events_for(entry, name), entry.first_event + entry.count)
    if isinstance(entry, Joined) and entry.worker == name and entry.service == service:
        return JoinedScan(uid)
    if isinstance(entry, Rebind) and entry.target == name:
        return TakeOver(uid, entry)
    return None


def commands_for(uid: uuid.UUID, entries: list[Entry], name: str, service: str,
                 counters: ServiceCounters, log: logging.Logger) -> list[Command]:
    """``command_for`` of each entry read; entries that cannot be read are counted, logged."""
    out = []
    for entry_id, fields in entries:
        try:
            command = command_for(uid, decode_entry(fields), name, service)
        except (ValueError, KeyError, TypeError) as exc:
            counters.bad_assignments += 1
            log.error("worker %s: ignored assignment entry %r of scan %s: %s",
                      name, entry_id, uid, exc)
            continue
        if command is not None:
            out.append(command)
    return out


def events_for(batch: AssignmentBatch, name: str) -> tuple[list[int], list[int]]:
    """The events of ``batch`` that ``name`` gets and how many streams each carries.

    Raises ``ValueError`` when its slot does not fit the 64-bit masks.
    """
    if name not in batch.workers:
        return [], []
    slot = batch.workers.index(name)
    if slot >= 64:
        raise ValueError(f"worker {name!r} has slot {slot}, which does not fit a 64-bit mask")
    bits = (batch.masks >> np.uint64(slot)) & np.uint64(1)
    counts = (bits.astype(bool) & (batch.present != 0)).sum(axis=1)
    rows = np.flatnonzero(counts)
    return (rows + batch.first_event).tolist(), counts[rows].tolist()
