"""Bookkeeping of one scan at the controller: credits, deliveries, finish, bounded reports.

The controller (``engine.py``) moves messages between Redis and this state; everything
here is plain Python and numpy, per batch, never per event.  A ``ScanState`` knows, for every
worker, how many (worker, event) deliveries were emitted to it and which of them are not yet
processed (bounded by the credit window), so progress, lost events and the finish decision
are exact without per-event records of the whole scan.

All reports (``progress``, ``status``, ``load``) have a size independent of the scan length.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import UUID4

from dranspose_fast.controller.answers import (
    Binding,
    IntervalLoad,
    LostWorker,
    Progress,
    RecentEvent,
    ReducerStatus,
    StallReport,
    Status,
    UpstreamLoss,
    WorkerLoad,
    WorkerStatus,
)
from dranspose_fast.controller.ledger import Ledger
from dranspose_fast.errors import MapError
from dranspose_fast.mapping import Batch, BindingEngine, MappingSequence
from dranspose_fast.runtime.redis_messages import (
    AssignmentBatch,
    CreditMessage,
    Joined,
    ReducedMessage,
    WorkerLost,
    encode_control,
)

logger = logging.getLogger("dranspose_fast.controller.scan")

#: Length of the "recent" lists in /status (bindings, events, lost event numbers).
RECENT = 100
#: Samples of a worker's processed total kept for /load.
LOAD_SAMPLES = 4096

_I64 = npt.NDArray[np.int64]


# === per-worker tracking ===


class WorkerTrack:
    """Deliveries emitted to one worker and how far it has processed them.

    A worker processes its deliveries in event order, so ``processed = k`` means its first
    ``k`` deliveries are done. Only the undone ones are kept (at most the credit window plus a
    constraint span), as numpy chunks of event numbers.
    """

    def __init__(self, name: str, tags: Iterable[str], start: float, service: str = "") -> None:
        self.name = name
        self.tags = sorted(tags)
        #: The worker process (its service uuid); another one under this name is a restart.
        self.service = service
        #: Deliveries rebound to this worker that its next grants pay for (they were not
        #: charged to its credit when they were bound to the lost worker).
        self.debt = 0
        self.granted = 0
        self.processed = 0
        self.results = 0
        self.errors = 0
        self.deliveries = 0
        self.last_event: int | None = None
        self._chunks: deque[_I64] = deque()
        self._off = 0  # consumed entries of the first chunk
        self._consumed = 0
        self.samples: deque[tuple[float, int]] = deque([(start, 0)], maxlen=LOAD_SAMPLES)

    def deliver(self, events: _I64) -> None:
        if len(events):
            self._chunks.append(events)
            self.deliveries += len(events)
            self._consume()

    def report(self, msg: CreditMessage, now: float) -> int:
        """Apply running totals; returns how many processed exceed the deliveries (0 if sane)."""
        self.granted += msg.granted
        self.results = max(self.results, msg.results)
        self.errors = max(self.errors, msg.errors)
        if msg.processed > self.processed:
            self.processed = msg.processed
            self.samples.append((now, self.processed))
        self._consume()
        return max(0, self.processed - self.deliveries)

    def _consume(self) -> None:
        todo = min(self.processed, self.deliveries) - self._consumed
        while todo > 0 and self._chunks:
            chunk = self._chunks[0]
            take = min(todo, len(chunk) - self._off)
            self._off += take
            self._consumed += take
            todo -= take
            self.last_event = int(chunk[self._off - 1])
            if self._off == len(chunk):
                self._chunks.popleft()
                self._off = 0

    @property
    def outstanding(self) -> int:
        return self.deliveries - self._consumed

    def outstanding_events(self) -> _I64:
        if not self._chunks:
            return np.empty(0, np.int64)
        parts = [self._chunks[0][self._off:], *list(self._chunks)[1:]]
        return np.concatenate(parts)

    def load(self, intervals: Iterable[int], scan: bool, start: float, now: float,
             end: float | None) -> WorkerLoad:
        out: dict[str, IntervalLoad] = {}
        for span in intervals:
            since = now - span
            base = self.samples[0][1]
            for t, total in reversed(self.samples):
                if t <= since:
                    base = total
                    break
            seconds = max(min(float(span), now - start), 1e-9)
            events = self.processed - base
            out[str(span)] = IntervalLoad(events=events, seconds=seconds, rate=events / seconds)
        if scan:
            seconds = max((end if end is not None else now) - start, 1e-9)
            out["scan"] = IntervalLoad(events=self.processed, seconds=seconds,
                                       rate=self.processed / seconds)
        return WorkerLoad(last_event=self.last_event, intervals=out)


# === the scan ===


class ScanState:
    """State of one scan: the map, the binding engine and what every worker reported.

    Parameters
    ----------
    uuid : UUID
        The mapping uuid.
    seq : MappingSequence
        The map (may be open: reactive scans append to it).
    horizon : int, optional
        Binding look-ahead of the engine.
    """

    def __init__(self, uuid: UUID4, seq: MappingSequence, horizon: int | None = None) -> None:
        self.uuid = uuid
        self.seq = seq
        self.engine = BindingEngine(seq) if horizon is None else BindingEngine(seq, horizon)
        self.streams = list(seq.streams)
        self.started = time.monotonic()
        self.ended: float | None = None
        self.workers: dict[str, WorkerTrack] = {}
        self.lost: dict[str, LostWorker] = {}
        self.reduced: dict[str, int] = {}
        self.reducer_errors = 0
        self.reducer_seen = False
        self.credit_id: bytes = b"0-0"
        self.reduced_id: bytes = b"0-0"
        self.finished = False
        self.reason: str | None = None
        self.update_pending = False  # the finished update still has to reach Redis
        self.outbox: deque[dict[str, bytes]] = deque()  # encoded batches not yet in Redis
        self.batches = 0
        self.counters: dict[str, int] = {
            "malformed_credits": 0, "malformed_reduced": 0, "unknown_worker_credits": 0,
            "credits_after_loss": 0, "rejected_workers": 0, "overcounted_events": 0,
            "workers_restarted": 0,
        }
        self.unknown: dict[str, int] = {}  # granted credits of workers without a config
        self._unknown_service: dict[str, str] = {}
        self._lost_arrays: dict[str, _I64] = {}
        self._completed: tuple[Any, int] | None = None
        self._bindings: deque[tuple[int, int, str, int]] = deque(maxlen=RECENT)
        #: Bindings of constraints of several events not yet written with a batch.
        self._unsaved: list[tuple[int, int, str]] = []
        self._recent: tuple[int, npt.NDArray[np.uint8], npt.NDArray[np.uint64],
                            dict[int, str]] | None = None
        #: The reducer's service uuid when the scan started (a new one means it restarted).
        self.reducer_uuid: UUID4 | None = None
        #: Each ingester's ``events_routed`` when the scan started (its counters are totals).
        self.routed_at_start: dict[str, int] = {}
        self.stalled: StallReport | None = None
        #: Unreleased deliveries by key (``controller.ledger``).
        self.ledger = Ledger()
        #: Every ingester of the scan keeps what it sent until it is released (set by the
        #: controller from their configs): a lost worker's deliveries can be rebound.
        self.retention = False
        self.next_release = 0.0  # when the controller may write the next release entry
        #: Service uuids of lost worker processes: their late credits are ignored.
        self.lost_services: set[str] = set()
        #: Per worker process, the events it dropped for frames lost upstream, by stream,
        #: and the first of them (``CreditMessage.lost``, running totals).
        self.upstream: dict[str, tuple[dict[str, int], dict[str, list[int]]]] = {}
        #: Streams a restarted ingester resumed: whether the loss is exact (its configs).
        self.resumed: dict[str, bool] = {}

    # === workers ===

    def add_worker(self, name: str, tags: Iterable[str], service: str = "") -> None:
        """Register a worker with the engine (no credit yet) and announce it (``Joined``).

        Raises
        ------
        MapError
            if the engine refuses it (no free slot, bad tags).
        """
        tagset = set(tags)
        self.engine.add_worker(name, tagset)
        self.workers[name] = WorkerTrack(name, tagset, self.started, service)
        self.outbox.append(encode_control(Joined(worker=name, service=service,
                                                 tags=sorted(tagset))))

    def credit(self, msg: CreditMessage, tags_of: Callable[[str], Iterable[str] | None]) -> None:
        """Apply one ``CreditMessage``; an unknown worker is registered with its config's tags."""
        track = self.workers.get(msg.worker)
        if msg.service in self.lost_services or (
                track is None and not msg.service and msg.worker in self.lost):
            self.counters["credits_after_loss"] += 1
            return
        if msg.lost:
            self.upstream[msg.service or msg.worker] = (msg.lost, msg.lost_first)
        if track is not None and msg.service and track.service != msg.service:
            if track.service:  # the same name, a new process: the old one is gone
                self.counters["workers_restarted"] += 1
                info = self.lose_worker(msg.worker)
                logger.error("worker %s restarted in scan %s: %d events lost, %d deliveries "
                             "rebound to %s", msg.worker, self.uuid, info.events_lost,
                             info.events_rebound, info.rebound_to)
                track = None
            else:
                track.service = msg.service
        if track is None:
            tags = tags_of(msg.worker)
            if tags is None:
                # keep its credit: its config may just not be visible yet
                self.counters["unknown_worker_credits"] += 1
                self.unknown[msg.worker] = self.unknown.get(msg.worker, 0) + msg.granted
                self._unknown_service[msg.worker] = msg.service
                logger.warning("credits from worker %r, which has no config; held back",
                               msg.worker)
                return
            try:
                self.add_worker(msg.worker, tags, msg.service)
            except MapError as exc:
                self.counters["rejected_workers"] += 1
                logger.error("cannot add worker %r to scan %s: %s", msg.worker, self.uuid, exc)
                return
            track = self.workers[msg.worker]
            held = self.unknown.pop(msg.worker, 0)
            if held:
                self.engine.grant(msg.worker, held)
                track.granted += held
        granted = self.account(track, msg)
        if granted:
            self.engine.grant(msg.worker, granted)

    def account(self, track: WorkerTrack, msg: CreditMessage) -> int:
        """Apply a credit message's totals and done-marks to ``track``; returns the credits
        the engine gets (what is left after paying the worker's debt)."""
        over = track.report(msg, time.monotonic())
        granted = msg.granted
        if track.debt:
            paid = min(track.debt, granted)
            track.debt -= paid
            granted -= paid
        self.ledger.report(msg.worker, msg.results, msg.done, self.reduced.get(msg.worker, 0))
        if over:
            self.counters["overcounted_events"] += 1
            logger.error("worker %r reports %d processed events but got only %d",
                         msg.worker, track.processed, track.deliveries)
        return granted

    def adopt_unknown(self, tags_of: Callable[[str], Iterable[str] | None]) -> None:
        """Register held-back workers whose config has appeared since."""
        for name in list(self.unknown):
            tags = tags_of(name)
            if tags is not None:
                granted = self.unknown.pop(name)
                service = self._unknown_service.pop(name, "")
                self.credit(CreditMessage(worker=name, granted=granted, processed=0, results=0,
                                          service=service), tags_of)

    def reduce(self, msg: ReducedMessage) -> None:
        self.reducer_seen = True
        for worker, total in msg.reduced.items():
            if total > self.reduced.get(worker, 0):
                self.reduced[worker] = total
                self.ledger.settle(worker, total)
        self.reducer_errors = max(self.reducer_errors, msg.errors)

    def lose_worker(self, name: str) -> LostWorker:
        """Remove a worker that died; its unemitted constraints are rebound by ``bind``.

        With ``retention`` (every ingester keeps what it sent until it is released), the
        deliveries it had not released go to one live worker (``rebind_held``); otherwise
        the events it had not processed are lost.
        """
        track = self.workers.pop(name)
        rebound = self.engine.remove_worker(name)
        if track.service:
            self.lost_services.add(track.service)
        self.ledger.forget_reports(name)
        target, moved = self.rebind_held(track) if self.retention else (None, 0)
        lost_events = track.outstanding_events() if target is None else np.empty(0, np.int64)
        for key in self.ledger.held_by(name):  # no successor: what it held is gone
            self.ledger.drop(key)
        key = name if name not in self.lost else f"{name}#{len(self.lost) + 1}"
        info = LostWorker(processed=track.processed, deliveries=track.deliveries,
                          events_lost=len(lost_events),
                          lost_events=lost_events[:RECENT].tolist(),
                          constraints_rebound=int(len(rebound)), at=time.time(),
                          events_rebound=moved, rebound_to=target)
        self.lost[key] = info
        self._lost_arrays[key] = lost_events
        self.outbox.append(encode_control(WorkerLost(
            worker=name, key=key, service=track.service, info=info.model_dump_json())))
        return info

    def lost_arrays_of(self, key: str, events: list[int]) -> None:
        """The events lost with ``key`` (as far as known: a taken-over scan keeps the first
        ``RECENT`` of them)."""
        self._lost_arrays[key] = np.asarray(events, np.int64)

    def rebind_held(self, track: WorkerTrack) -> tuple[str | None, int]:
        """Rebind every key the lost ``track`` held to one live worker whose tags cover its
        tags (else one sharing a tag), the least loaded; returns it and the deliveries moved.
        The ``Rebind`` entries go to the outbox, before any later batch."""
        keys = self.ledger.held_by(track.name)
        if not keys:
            return None, 0
        tags = set(track.tags)
        live = sorted(self.workers.values(), key=lambda t: (t.outstanding, t.name))
        fits = [t for t in live if tags <= set(t.tags)] or [t for t in live
                                                          if tags & set(t.tags)]
        if not fits:
            return None, 0
        target = fits[0]
        moved = 0
        for key in keys:
            entry = self.ledger.rebind(key, target.name)
            events = np.asarray(entry.events, np.int64)
            target.deliver(events)
            target.debt += len(events)
            moved += len(events)
            self.outbox.append(encode_control(entry))
        logger.warning("scan %s: %d unreleased deliveries of worker %s rebound to %s",
                       self.uuid, moved, track.name, target.name)
        return target.name, moved

    # === binding ===

    def record(self, batch: Batch) -> dict[str, bytes]:
        """Account a bind result (deliveries per worker, recent rows); returns its encoding."""
        names = dict(batch.worker_names)
        n = batch.count
        present = batch.present != 0
        if batch.masks.shape[1]:
            rowmask = np.bitwise_or.reduce(batch.masks, axis=1).astype("<u8")
        else:
            rowmask = np.zeros(n, "<u8")
        bits = np.unpackbits(rowmask.view(np.uint8).reshape(n, 8), axis=1, bitorder="little")
        for slot in np.flatnonzero(bits.sum(axis=0)).tolist():
            track = self.workers.get(names.get(slot, ""))
            if track is not None:
                rows = np.flatnonzero(bits[:, slot])
                events = rows.astype(np.int64) + batch.first_event
                track.deliver(events)
                if self.retention:
                    mine = (batch.masks[rows] >> np.uint64(slot)) & np.uint64(1)
                    counts = (mine.astype(bool) & present[rows]).sum(axis=1).astype(np.int64)
                    self.ledger.deliver(track.name, events, counts)
        self.note_bindings(batch)
        keep = min(n, RECENT)
        self._recent = (batch.first_event + n - keep, batch.present[n - keep:].copy(),
                        batch.masks[n - keep:].copy(), names)
        self.batches += 1
        slots = {name: slot for slot, name in names.items()}
        bound = np.array([(i, c, slots[w]) for i, c, w in self._unsaved if w in slots],
                         np.int64).reshape(-1, 3)
        self._unsaved.clear()
        return AssignmentBatch(batch.first_event, batch.present, batch.masks,
                               AssignmentBatch.slot_names(names), bound).encode()

    def note_bindings(self, batch: Batch) -> None:
        """Remember the latest constraint bindings (for /status), and those of constraints
        of several events for the next assignment entry (a controller taking over needs
        them: ``controller.resume``)."""
        names = batch.worker_names
        for inst, local, slot, first in batch.bound[-RECENT:].tolist():
            self._bindings.append((inst, local, names.get(slot, "?"), first))
        if len(batch.bound):
            spanning = batch.bound[self.engine.spanning(batch.bound)]
            self._unsaved += [(i, c, names.get(w, "")) for i, c, w, _ in spanning.tolist()]

    def complete(self) -> bool:
        """Map closed and emitted, every delivery processed, every result reduced."""
        if not self.engine.finished:
            return False
        for name, track in self.workers.items():
            if track.processed < track.deliveries:
                return False
            if track.results and self.reduced.get(name, 0) < track.results:
                return False
        return True

    def completion_reason(self) -> str | None:
        """``None`` (completed) unless events were lost (with workers, upstream in an ingester
        restart): then it says how many and where."""
        parts = []
        lost = {n: w.events_lost for n, w in self.lost.items() if w.events_lost}
        if lost:
            parts.append(f"{sum(lost.values())} events lost with workers "
                         f"{', '.join(sorted(lost))}")
        for stream, loss in sorted(self.upstream_losses().items()):
            if loss.exact and not loss.events:
                continue  # resumed without a gap
            known = f"{loss.events} events" if loss.exact else f"at least {loss.events} events"
            parts.append(f"{known} lost upstream in stream {stream} (ingester restart"
                         f"{'' if loss.exact else '; its protocol has no frame numbers'})")
        return f"completed; {'; '.join(parts)}" if parts else None

    def upstream_losses(self) -> dict[str, UpstreamLoss]:
        """Per stream, what the workers dropped for frames lost in an ingester restart."""
        events: dict[str, int] = {}
        first: dict[str, list[int]] = {}
        for counts, firsts in self.upstream.values():
            for stream, n in counts.items():
                events[stream] = events.get(stream, 0) + n
                first.setdefault(stream, []).extend(firsts.get(stream, []))
        streams = set(events) | set(self.resumed)
        return {s: UpstreamLoss(events=events.get(s, 0),
                                first_events=sorted(first.get(s, []))[:RECENT],
                                exact=self.resumed.get(s, True)) for s in sorted(streams)}

    def end(self, reason: str | None) -> None:
        self.stalled = None
        self.finished = True
        self.reason = reason
        self.ended = time.monotonic()

    # === reports ===

    def completed_events(self) -> int:
        """Emitted events none of whose deliveries is outstanding or lost."""
        key = (self.engine.next_event, len(self.lost),
               tuple((t.deliveries, t.outstanding) for t in self.workers.values()))
        if self._completed is not None and self._completed[0] == key:
            return self._completed[1]
        parts = [t.outstanding_events() for t in self.workers.values() if t.outstanding]
        parts += [a for a in self._lost_arrays.values() if len(a)]
        if len(parts) == 1:
            busy = len(parts[0])  # one worker's deliveries are distinct events
        else:
            busy = len(np.unique(np.concatenate(parts))) if parts else 0
        done = self.engine.next_event - busy
        self._completed = (key, done)
        return done

    def progress(self) -> Progress:
        return Progress(last_assigned=self.engine.next_event,
                        completed_events=self.completed_events(),
                        total_events=self.seq.total_events, finished=self.finished)

    def status(self, components: dict[str, dict[str, float]],
               counters: dict[str, int], dropped: dict[str, int]) -> Status:
        workers = {
            name: WorkerStatus(
                tags=t.tags, granted=t.granted, processed=t.processed, results=t.results,
                reduced=self.reduced.get(name, 0), errors=t.errors, deliveries=t.deliveries,
                outstanding=t.outstanding, credit=self.engine.credit(name),
                pending=self.engine.pending(name))
            for name, t in sorted(self.workers.items())
        }
        reducer = ReducerStatus(reduced=sum(self.reduced.values()), errors=self.reducer_errors) \
            if self.reducer_seen else None
        reason = self.reason if self.reason or not self.finished else "completed"
        return Status(
            mapping_uuid=self.uuid, finished=self.finished, reason=reason,
            open=not self.seq.closed, last_assigned=self.engine.next_event,
            completed_events=self.completed_events(), total_events=self.seq.total_events,
            known_events=self.seq.known_events, batches=self.batches, workers=workers,
            lost_workers=dict(self.lost), reducer=reducer, components=components,
            counters={**counters, **self.counters}, dropped=dropped,
            dropped_total=sum(dropped.values()), recent_bindings=self._binding_list(),
            recent_events=self._recent_events(), stalled=self.stalled,
            lost_upstream=self.upstream_losses())

    def _binding_list(self) -> list[Binding]:
        out = []
        for inst, local, worker, first in self._bindings:
            try:
                _, part, _ = self.seq.locate(first)
                value = self.seq.constraint_value(inst, local)
            except (MapError, IndexError, ValueError):
                part, value = "?", local
            out.append(Binding(part=part, instance=inst, constraint=value, worker=worker,
                               first_event=first))
        return out

    def _recent_events(self) -> list[RecentEvent]:
        if self._recent is None:
            return []
        first, present, masks, names = self._recent
        out = []
        for i in range(len(present)):
            streams: dict[str, list[str] | None] = {}
            for j, stream in enumerate(self.streams):
                m = int(masks[i, j])
                streams[stream] = sorted(names.get(w, "?") for w in range(64) if m >> w & 1) \
                    if present[i, j] else None
            out.append(RecentEvent(event=first + i, streams=streams))
        return out

    def load(self, intervals: list[int], scan: bool) -> dict[str, WorkerLoad]:
        now = time.monotonic()
        return {name: t.load(intervals, scan, self.started, now, self.ended)
                for name, t in sorted(self.workers.items())}


def counters_of(raw: dict[str, Any]) -> dict[str, float]:
    """Numeric fields of a component's published state (its counters), bounded to 64."""
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
        elif isinstance(value, dict) and key not in ("connected_workers",):
            for sub, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"{key}.{sub}"] = v
        if len(out) >= 64:
            break
    return out


# === data loss ===

#: Counters that count lost data (frames, events, batches or results), by the last part of
#: their name: ``dropped_*`` everywhere, ``malformed*`` and ``undecodable*`` inputs.
LOSS_PREFIXES = ("dropped", "malformed", "undecodable")
#: The controller's counter of events held by workers that vanished (``lost_workers``).
LOST_WITH_WORKERS = "events_lost_with_workers"


def loss_totals(components: dict[str, dict[str, float]],
                counters: dict[str, int]) -> dict[str, int]:
    """Lost data summed by ``role.counter`` over the live components, plus the controller's.

    ``components`` maps ``"role:name"`` to that component's counters (``counters_of``); a
    component's counters count since it started and leave the sums when its config expires.
    """
    out: dict[str, int] = {}
    for component, values in components.items():
        role = component.split(":", 1)[0]
        for key, value in values.items():
            short = key.rsplit(".", 1)[-1]
            if short.startswith(LOSS_PREFIXES):
                name = f"{role}.{short}"
                out[name] = out.get(name, 0) + int(value)
    out[f"controller.{LOST_WITH_WORKERS}"] = counters.get(LOST_WITH_WORKERS, 0)
    return out


class LossLog:
    """Logs every increase of a ``loss_totals`` entry (one error per counter and check)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.seen: dict[str, int] = {}

    def update(self, totals: dict[str, int]) -> None:
        for name, value in totals.items():
            before = self.seen.get(name, 0)
            if value > before:
                self.log.error("data lost: %s rose by %d to %d", name, value - before, value)
            # a restarted component counts from 0 again: follow it down without a log
            self.seen[name] = value
