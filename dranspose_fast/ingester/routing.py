"""The ingester's data path: pending assignment rows and routing.

Everything here runs in the ingester's data-loop thread (ZeroMQ sockets are not thread-safe);
the sources it reads are in ``sources``.

* ``PendingBatch`` holds the rows of an ``AssignmentBatch`` restricted to this ingester's
  streams, as Python lists (converted once per batch, not per row).
  Rows of a worker lost before they were routed go to its successor (``rebound``).
* ``WorkerLinks`` (``links``) sends the batches, queues them for unreachable workers and
  retains them until released.
* ``route`` consumes head rows while every needed message is ready and sends each worker one
  packed batch per round: frames are never held back waiting for more.
* ``BeginScan``, ``FinishScan``, ``Assign``, ``Control``, ``BadAssignment``: the commands
  other threads post to the data loop (``runtime.commands.CommandQueue``).
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np

from dranspose_fast import _route
from dranspose_fast.dump import DumpWriter
from dranspose_fast.event import StreamData, make_internal, make_stream_data
from dranspose_fast.ingester.links import WorkerLinks
from dranspose_fast.ingester.retention import Rebound
from dranspose_fast.ingester.sources import Counters, Source, UpstreamSource, log_sparsely
from dranspose_fast.protocol import StreamName
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.redis_messages import AssignmentBatch, ControlEntry, ControllerUpdate

#: Rows routed per round before the batches are sent (bounds latency and memory per round).
MAX_ROWS_PER_ROUND: Final[int] = 1024


# === Commands to the data loop ===


@dataclass(frozen=True, slots=True)
class BeginScan:
    """A controller update with a new mapping (updates thread)."""

    update: ControllerUpdate


@dataclass(frozen=True, slots=True)
class FinishScan:
    """The scan ``mapping_uuid`` is over (updates thread; a Redis restart)."""

    mapping_uuid: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True)
class Assign:
    """An assignment batch of the scan ``mapping_uuid`` (assignments thread)."""

    mapping_uuid: uuid.UUID
    batch: AssignmentBatch


@dataclass(frozen=True, slots=True)
class Control:
    """A control entry of the scan's assignment stream (``Release``, ``Rebind``)."""

    mapping_uuid: uuid.UUID
    entry: ControlEntry


@dataclass(frozen=True, slots=True)
class BadAssignment:
    """An assignment entry that could not be decoded (counted and logged by the data loop)."""

    message: str


Command = BeginScan | FinishScan | Assign | Control | BadAssignment


# === Assignments ===


class PendingBatch:
    """One assignment batch restricted to this ingester's streams; ``pos`` is the next row.

    ``present``/``masks`` stay C-contiguous arrays for the compiled router; the generic router
    reads Python lists made on first use.
    """

    __slots__ = ("_lists", "_names", "_rowcum", "cum", "first", "masks", "nrows", "pos",
                 "present", "rebound", "valid", "workers")

    def __init__(self, batch: AssignmentBatch, own_cols: list[int], skip: int = 0) -> None:
        self.present = np.ascontiguousarray(batch.present[skip:, own_cols], dtype=np.uint8)
        self.masks = np.ascontiguousarray(batch.masks[skip:, own_cols], dtype=np.uint64)
        self.first = batch.first_event + skip
        self.nrows = int(self.present.shape[0])
        cells = self.present != 0
        #: cum[r, k]: cells of stream k in rows before r; _rowcum[r]: rows with a cell before r.
        self.cum = np.zeros((self.nrows + 1, cells.shape[1]), np.int64)
        np.cumsum(cells, axis=0, out=self.cum[1:])
        self._rowcum = np.zeros(self.nrows + 1, np.int64)
        np.cumsum(cells.any(axis=1), out=self._rowcum[1:])
        self.workers = batch.workers
        #: Bit w set when slot w names a worker (other bits in a mask are a bad batch).
        self.valid = sum(1 << w for w, name in enumerate(batch.workers[:64]) if name)
        self.pos = 0
        self._names: dict[int, tuple[str, ...]] = {0: ()}
        self._lists: tuple[list[list[int]], list[list[int]]] | None = None
        #: Workers of these rows that were lost before the rows were routed: where their
        #: deliveries go instead (``Rebind``).
        self.rebound: dict[str, Rebound] = {}

    def dest(self, name: str) -> str | Rebound:
        """Where the frames of worker ``name``'s rows go."""
        return self.rebound.get(name, name) if self.rebound else name

    def redirect(self, key: str, holder: str, to: Rebound) -> None:
        """The deliveries of ``key`` (held by the lost ``holder``) go to ``to`` from now on."""
        for name, rb in list(self.rebound.items()):
            if rb.key == key:
                self.rebound[name] = to
        if key == holder and holder in self.workers and holder not in self.rebound:
            self.rebound[holder] = to

    def remaining(self) -> int:
        """Rows from ``pos`` on with at least one of our cells."""
        return int(self._rowcum[-1] - self._rowcum[self.pos])

    def cells(self, column: int) -> int:
        """How many rows have a frame of our ``column``-th stream."""
        return int(self.cum[-1, column] - self.cum[self.pos, column])

    def need(self, rows: int) -> list[int]:
        """Per stream, the messages the next ``rows`` rows with a cell take."""
        base = self._rowcum[self.pos]
        end = int(np.searchsorted(self._rowcum, base + rows, side="left"))
        end = min(end, self.nrows)
        return (self.cum[end] - self.cum[self.pos]).tolist()  # type: ignore[no-any-return]

    def lists(self) -> tuple[list[list[int]], list[list[int]]]:
        """``present`` and ``masks`` as nested lists (for the generic router)."""
        if self._lists is None:
            self._lists = (self.present.tolist(), self.masks.tolist())
        return self._lists

    def names(self, mask: int) -> tuple[str, ...] | None:
        """Worker names of a mask; ``None`` if a bit names no worker slot (bad batch)."""
        found = self._names.get(mask)
        if found is None:
            slots = [w for w in range(64) if mask >> w & 1]
            if slots[-1] >= len(self.workers) or not all(self.workers[w] for w in slots):
                return None
            found = self._names[mask] = tuple(self.workers[w] for w in slots)
        return found


class ScanState:
    """Per-scan state of the data loop."""

    def __init__(
        self,
        mapping_uuid: uuid.UUID,
        columns: list[StreamName],
        sources: list[tuple[int, Source]],
    ) -> None:
        self.uuid = mapping_uuid
        self.columns = columns
        #: (column index in the assignment batches, source) for each of our streams mapped.
        self.sources = sources
        self.pending: deque[PendingBatch] = deque()
        self.next_event: int | None = None
        self.dumper: DumpWriter | None = None
        self.software_trigger: Iterator[Mapping[str, StreamData]] | None = None
        self.finished = False
        #: Per stream, the next message position handed to the compiled router.
        self.taken = np.zeros(len(sources), np.intp)
        #: The ``meta`` frame of every event batch: all our streams, by source index.
        self.meta = dataplane.stream_meta((src.stream, _typ(src)) for _col, src in sources)
        self._upstreams = [src for _col, src in sources if isinstance(src, UpstreamSource)]

    @property
    def own_cols(self) -> list[int]:
        return [col for col, _src in self.sources]

    def upstreams(self) -> list[UpstreamSource] | None:
        """The sources if every one is read by the data loop itself, else ``None``."""
        if self.sources and len(self._upstreams) == len(self.sources):
            return self._upstreams
        return None


def accept(scan: ScanState, batch: AssignmentBatch, counters: Counters,
           log: logging.Logger) -> PendingBatch | None:
    """The rows of ``batch`` this ingester still has to route (None: none, or a bad batch:
    counted and logged); a batch that repeats events is cut, a gap before it is reported."""
    if batch.present.shape[1] != len(scan.columns):
        counters.bad_assignments += 1
        log.error("assignment batch at event %d has %d streams, the mapping %d; ignored",
                  batch.first_event, batch.present.shape[1], len(scan.columns))
        return None
    skip = 0
    expected = scan.next_event
    if expected is not None and batch.first_event != expected:
        if batch.first_event < expected:
            skip = min(expected - batch.first_event, batch.count)
            log.warning("assignment batch repeats events %d..%d; skipped",
                        batch.first_event, batch.first_event + skip - 1)
        else:
            counters.bad_assignments += 1
            log.error("assignments for events %d..%d are missing",
                      expected, batch.first_event - 1)
    scan.next_event = max(expected or 0, batch.first_event + batch.count)
    if skip >= batch.count:
        return None
    pb = PendingBatch(batch, scan.own_cols, skip)
    return pb if pb.remaining() else None


def _typ(src: Source) -> str:
    return src.typ if isinstance(src, UpstreamSource) else ""


# === Routing ===


def route(
    scan: ScanState,
    links: WorkerLinks,
    counters: Counters,
    log: logging.Logger,
    max_rows: int = MAX_ROWS_PER_ROUND,
) -> int:
    """Route head rows while their messages are ready; returns the number of rows routed.

    Every message taken goes to the workers in its cell's mask (or nowhere: discarded by the
    map); each worker gets one packed batch for the round.
    """
    if scan.dumper is None and scan.software_trigger is None:
        upstreams = scan.upstreams()
        if upstreams is not None:
            return route_compiled(scan, upstreams, links, counters, log, max_rows)
    return route_generic(scan, links, counters, log, max_rows)


def route_compiled(
    scan: ScanState,
    upstreams: list[UpstreamSource],
    links: WorkerLinks,
    counters: Counters,
    log: logging.Logger,
    max_rows: int = MAX_ROWS_PER_ROUND,
) -> int:
    """The fast path: drain what the rows need, then route and pack in one compiled step.

    Used when every stream is read by the data loop itself and nothing needs the events as
    objects (no dump, no software trigger).  Python runs per batch, not per row or frame.
    """
    pending = scan.pending
    taken = scan.taken
    messages = [src.msgs for src in upstreams]
    routed = 0
    while pending and routed < max_rows:
        pb = pending[0]
        for k, n in enumerate(pb.need(max_rows - routed)):
            src = upstreams[k]
            if n > src.available:
                src.fill(n)
            taken[k] = src.head
        pos, nrouted, forwarded, discarded, bad, first_bad, batches = _route.route_pack(
            pb.present, pb.masks, pb.pos, max_rows - routed, pb.first, messages, taken,
            pb.valid, dataplane.ZERO_COPY_THRESHOLD)
        for k, src in enumerate(upstreams):
            src.consumed(int(taken[k]))
        pb.pos = pos
        routed += nrouted
        counters.events_routed += nrouted
        counters.forwarded += forwarded
        counters.discarded_by_map += discarded
        if bad:
            counters.bad_assignments += bad
            log.error("%d frames discarded from event %d on: their masks name a free worker "
                      "slot", bad, first_bad)
        meta = scan.meta
        workers = pb.workers
        last = pb.first + pos - 1
        for slot, index, payload, externals, nevents in batches:
            links.send_frames(pb.dest(workers[slot]),
                              dataplane.event_frames(meta, index, payload, externals),
                              nevents, last)
        if pos < pb.nrows:
            break  # a message has not arrived yet
        pending.popleft()
    return routed


def route_generic(
    scan: ScanState,
    links: WorkerLinks,
    counters: Counters,
    log: logging.Logger,
    max_rows: int = MAX_ROWS_PER_ROUND,
) -> int:
    """Row by row in Python: user sources, software triggers and dumps need event objects."""
    out: dict[str | Rebound, list[dataplane.PartialEvent]] = {}
    sources = scan.sources
    pending = scan.pending
    dumper = scan.dumper
    routed = 0
    while pending and routed < max_rows:
        pb = pending[0]
        if pb.pos >= pb.nrows:
            pending.popleft()
            continue
        r = pb.pos
        present, masks = pb.lists()
        prow = present[r]
        if not any(prow):
            pb.pos += 1
            continue
        if not all(src.ready() for k, (_col, src) in enumerate(sources) if prow[k]):
            break  # never hold frames back: what is ready is sent below
        evn = pb.first + r
        mrow = masks[r]
        streams: dict[StreamName, StreamData] = {}
        placeholders = False
        for k, (_col, src) in enumerate(sources):
            if prow[k]:
                data = src.take()
                if data is None:
                    placeholders = True
                else:
                    streams[src.stream] = data
        if scan.software_trigger is not None or placeholders:
            _software_trigger(scan, sources, prow, streams, counters, log)
        for k, (_col, src) in enumerate(sources):
            if not prow[k]:
                continue
            mask = mrow[k]
            if not mask:
                counters.discarded_by_map += 1
                continue
            names = pb.names(mask)
            if names is None:
                counters.bad_assignments += 1
                log.error("event %d stream %s: mask %#x names a free worker slot; "
                          "frame discarded", evn, src.stream, mask)
                continue
            counters.forwarded += 1
            data = streams[src.stream]
            for name in names:
                dest = pb.dest(name)
                events = out.get(dest)
                if events is None:
                    out[dest] = [(evn, {src.stream: data})]
                elif events[-1][0] == evn:
                    events[-1][1][src.stream] = data
                else:
                    events.append((evn, {src.stream: data}))
        if dumper is not None:
            dumper = _dump(scan, evn, streams, counters, log)
        counters.events_routed += 1
        routed += 1
        pb.pos += 1
        if pb.pos == pb.nrows:
            pending.popleft()
    for dest, events in out.items():
        links.send(dest, events)
    return routed


def _software_trigger(
    scan: ScanState,
    sources: list[tuple[int, Source]],
    prow: list[int],
    streams: dict[StreamName, StreamData],
    counters: Counters,
    log: logging.Logger,
) -> None:
    """Fill software-triggered placeholders from the next ``software_trigger()`` item."""
    extra: Mapping[str, StreamData] = {}
    if scan.software_trigger is not None:
        try:
            extra = next(scan.software_trigger)
        except StopIteration:
            log.error("software_trigger() ended; later placeholders stay empty")
            scan.software_trigger = None
        except Exception:
            counters.source_errors += 1
            log.exception("software_trigger() raised")
    for k, (_col, src) in enumerate(sources):
        if prow[k] and src.stream not in streams:
            data = extra.get(src.stream)
            if not isinstance(data, StreamData):
                counters.malformed += 1
                log_sparsely(log, counters.malformed, "stream %s: no StreamData from "
                             "software_trigger() for a placeholder; sending it empty", src.stream)
                data = make_stream_data("", [])
            streams[src.stream] = data


def _dump(
    scan: ScanState,
    evn: int,
    streams: dict[StreamName, StreamData],
    counters: Counters,
    log: logging.Logger,
) -> DumpWriter | None:
    """Append the event to the scan's dump (without the lost placeholders of a resumed
    stream, ``sources.LOST``); a failing dump is closed, the scan goes on."""
    dumper = scan.dumper
    if dumper is None:
        return None
    kept = {name: data for name, data in streams.items() if data.frames}  # no placeholders
    if not kept:
        return dumper
    try:
        dumper.write(make_internal(evn, kept, datetime.now(UTC)))
        counters.dumped += 1
        return dumper
    except (OSError, ValueError) as exc:
        counters.dump_errors += 1
        log.error("dump %s failed at event %d (%s); dumping stops for this scan",
                  dumper.path, evn, exc)
        try:
            dumper.close()
        except (OSError, ValueError):
            pass
        scan.dumper = None
        return None
