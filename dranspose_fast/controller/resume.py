"""A new controller continues the scan a dead one left running (docs/protocol.md,
"Controller resume").

Everything a scan's bookkeeping holds is in Redis already, or is written there for this:

* the map: ``dfast:sequence:{uuid}``, a list: the map as posted (``MappingSequence.saved``)
  then one entry per append or close of an open sequence (``SequenceChange``);
* the decisions: ``dfast:assigned:{uuid}`` holds every emitted batch (with the bindings of
  constraints of several events, field ``k``), every worker registered (``Joined``, with its
  tags), given up (``WorkerLost``) and every rebinding of its deliveries (``Rebind``);
* the reports: ``dfast:credits:{uuid}`` and ``dfast:reduced:{uuid}``, running totals.

``resume_scan`` replays the three streams merged in the order Redis received them (stream
ids share the server's clock) through the same ``ScanState`` accounting the dead controller
ran, makes no decision of its own while doing so, then puts a fresh binding engine where the
old one stood (``BindingEngine.restore``): the next event, each worker's credit (granted,
minus deliveries, plus the debt of deliveries rebound to it), and the worker of every
constraint of the current instance that emitted part of its events.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any, Literal, cast

import msgspec
import numpy as np
import redis
from pydantic import BaseModel, ValidationError

from dranspose_fast.controller.answers import LostWorker
from dranspose_fast.controller.scan import ScanState, WorkerTrack
from dranspose_fast.errors import DransposeFastError, MapError
from dranspose_fast.mapping import Batch, MappingSequence
from dranspose_fast.protocol import GENERIC_WORKER
from dranspose_fast.runtime.redis_messages import (
    AssignmentBatch,
    CreditMessage,
    Joined,
    Keys,
    Rebind,
    WorkerLost,
    credit_decoder,
    decode_entry,
    reduced_decoder,
)

__all__ = ["ResumeError", "SequenceChange", "resume_scan", "save_change", "save_sequence"]

logger = logging.getLogger("dranspose_fast.controller")

#: Entries read per XRANGE call while replaying.
PAGE = 10_000


class ResumeError(DransposeFastError):
    """The running scan cannot be continued (what is missing or inconsistent is named)."""


class SequenceChange(BaseModel):
    """An append to (or the close of) an open sequence, as saved for a controller taking
    over: ``POST /api/v1/sequence/append`` and ``/close``."""

    kind: Literal["append", "close"]
    parts: dict[str, dict[str, Any]] = {}
    sequence: list[str] = []


def save_sequence(client: redis.Redis, uid: uuid.UUID, seq: MappingSequence) -> None:
    """Write the map of a new scan (before its first update reaches the components)."""
    key = Keys.sequence(uid)
    pipe = client.pipeline()
    pipe.delete(key)
    pipe.rpush(key, msgspec.json.encode(seq.saved()))
    pipe.execute()


def save_change(client: redis.Redis, uid: uuid.UUID, change: SequenceChange) -> None:
    """Append one change of an open sequence to its saved map."""
    client.rpush(Keys.sequence(uid), change.model_dump_json())


def load_sequence(client: redis.Redis, uid: uuid.UUID) -> MappingSequence:
    raw = cast(list[bytes], client.lrange(Keys.sequence(uid), 0, -1))
    if not raw:
        raise ResumeError(f"the map of scan {uid} is not in redis ({Keys.sequence(uid)})")
    try:
        seq = MappingSequence.from_saved(msgspec.json.decode(raw[0]))
        for blob in raw[1:]:
            change = SequenceChange.model_validate_json(blob)
            if change.kind == "close":
                seq.close()
                continue
            for name, cells in change.parts.items():
                seq.add_part(name, cells)
            seq.append(change.sequence)
    except (MapError, ValidationError, msgspec.DecodeError, KeyError, TypeError) as exc:
        raise ResumeError(f"the saved map of scan {uid} cannot be read: {exc}") from None
    return seq


def _stream(client: redis.Redis, key: str) -> Iterator[tuple[tuple[int, int], bytes, Any]]:
    """``(id as numbers, id, fields)`` of every entry of a stream, in order."""
    start = "-"
    while True:
        page = cast(list[tuple[bytes, dict[bytes, bytes]]],
                    client.xrange(key, start, "+", count=PAGE))
        for entry_id, fields in page:
            ms, seq = entry_id.split(b"-")
            yield (int(ms), int(seq)), entry_id, fields
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0].decode()


class _Replay:
    """Applies the entries of a scan's streams to a fresh ``ScanState``, deciding nothing."""

    def __init__(self, scan: ScanState) -> None:
        self.scan = scan
        self.next_event = 0
        #: (instance, local constraint) -> the worker it was last bound to.
        self.bindings: dict[tuple[int, int], str] = {}
        #: Credits of (worker, process) whose ``Joined`` entry comes later (or never: no
        #: config then, held back).
        self.waiting: dict[tuple[str, str], list[CreditMessage]] = {}

    def batch(self, b: AssignmentBatch) -> None:
        if b.first_event != self.next_event:
            raise ResumeError(f"assignments jump from event {self.next_event} to "
                              f"{b.first_event}")
        names = {slot: name for slot, name in enumerate(b.workers) if name}
        for inst, local, slot in b.bound.tolist():
            self.bindings[(inst, local)] = b.workers[slot]
        self.scan.record(Batch(b.first_event, b.count, self.scan.seq.streams, b.present,
                               b.masks, np.empty((0, 4), np.int64), names))
        self.next_event = b.first_event + b.count

    def joined(self, j: Joined) -> None:
        scan = self.scan
        tags = set(j.tags) or {GENERIC_WORKER}
        scan.workers[j.worker] = WorkerTrack(j.worker, tags, scan.started, j.service)
        for msg in self.waiting.pop((j.worker, j.service), []):
            self.credit(msg)

    def lost(self, entry: WorkerLost) -> None:
        scan = self.scan
        scan.workers.pop(entry.worker, None)
        scan.lost_services.add(entry.service)
        scan.ledger.forget_reports(entry.worker)
        for key in scan.ledger.held_by(entry.worker):
            scan.ledger.drop(key)
        info = LostWorker.model_validate_json(entry.info)
        scan.lost[entry.key] = info
        scan.lost_arrays_of(entry.key, info.lost_events)

    def rebind(self, entry: Rebind) -> None:
        scan = self.scan
        made = scan.ledger.rebind(entry.key, entry.target)
        if made.new_key != entry.new_key:  # keep the dead controller's key names
            scan.ledger.keys[entry.new_key] = scan.ledger.keys.pop(made.new_key)
        target = scan.workers.get(entry.target)
        if target is not None:
            target.deliver(np.asarray(entry.events, np.int64))
            target.debt += len(entry.events)

    def credit(self, msg: CreditMessage) -> None:
        scan = self.scan
        if msg.service in scan.lost_services:
            return
        track = scan.workers.get(msg.worker)
        if track is None or (msg.service and track.service != msg.service):
            self.waiting.setdefault((msg.worker, msg.service), []).append(msg)
            return
        if msg.lost:
            scan.upstream[msg.service or msg.worker] = (msg.lost, msg.lost_first)
        scan.account(track, msg)

    def finish(self) -> int:
        """Register the workers with the engine where the old one stood; returns the
        bindings it kept."""
        scan = self.scan
        for msgs in self.waiting.values():  # never registered: held back, as the old one did
            for msg in msgs:
                scan.unknown[msg.worker] = scan.unknown.get(msg.worker, 0) + msg.granted
        credits = {}
        for name, track in scan.workers.items():
            scan.engine.add_worker(name, track.tags)
            credits[name] = track.granted - track.deliveries + track.debt  # may be < 0
        bindings = [(i, c, w) for (i, c), w in self.bindings.items()]
        return scan.engine.restore(self.next_event, bindings, credits)


def resume_scan(client: redis.Redis, uid: uuid.UUID, retention: bool) -> ScanState:
    """The scan ``uid`` as the controller that ran it last stood (module doc); ``retention``:
    every ingester keeps what it sent (the ledger of unreleased deliveries is rebuilt).

    Raises
    ------
    ResumeError
        naming what is missing or inconsistent; the caller ends the scan instead.
    """
    scan = ScanState(uid, load_sequence(client, uid))
    scan.retention = retention
    replay = _Replay(scan)
    credits_key, reduced_key = Keys.credits(uid), Keys.reduced(uid)
    merged = sorted(
        [(order, 0, entry_id, fields) for order, entry_id, fields
         in _stream(client, Keys.assigned(uid))]
        + [(order, 1, entry_id, fields) for order, entry_id, fields
           in _stream(client, credits_key)]
        + [(order, 2, entry_id, fields) for order, entry_id, fields
           in _stream(client, reduced_key)], key=lambda e: (e[0], e[1]))
    try:
        for _order, source, entry_id, fields in merged:
            if source == 1:
                scan.credit_id = entry_id
                replay.credit(credit_decoder.decode(fields[b"d"]))
            elif source == 2:
                scan.reduced_id = entry_id
                scan.reduce(reduced_decoder.decode(fields[b"d"]))
            else:
                entry = decode_entry(fields)
                if isinstance(entry, AssignmentBatch):
                    replay.batch(entry)
                elif isinstance(entry, Joined):
                    replay.joined(entry)
                elif isinstance(entry, WorkerLost):
                    replay.lost(entry)
                elif isinstance(entry, Rebind):
                    replay.rebind(entry)
        kept = replay.finish()
        scan.counters["resumed_bindings"] = kept
    except (ValueError, KeyError, MapError, ValidationError, msgspec.DecodeError) as exc:
        raise ResumeError(f"scan {uid} cannot be replayed: {exc}") from None
    logger.warning("resumed scan %s at event %d with workers %s (%d constraint bindings kept, "
                   "%d assignment, credit and reduced entries replayed)", uid,
                   scan.engine.next_event, sorted(scan.workers), kept, len(merged))
    return scan
