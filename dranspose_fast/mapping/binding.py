"""Credit-based binding of a trigger map's constraints to workers (``BindingEngine``).

The map itself (parsing, validation, compiled pools) is ``sequence.MappingSequence``; the
engine reads it through ``BindableMap`` (what it needs of a map) and runs the compiled loop,
``_binding.Engine``. ``dranspose_fast.mapping`` exports ``Batch`` and ``BindingEngine``.

Binding rules (``BindingEngine``; precise wording in ``docs/mapping.md``):

* Credits count (worker, event) deliveries. ``credit`` = granted - charged; ``pending`` =
  deliveries reserved by the worker's bound constraints and not yet emitted.
* The head event (first unemitted) binds each unbound constraint to the eligible worker with
  the largest ``credit - pending`` (ties: lowest id); eligible = tags cover the constraint's
  tags and ``credit >= 1``. Events after the head, up to ``head + horizon`` (exclusive), bind
  in event order with eligibility ``credit - pending >= 1`` (uncommitted credit only).
  A constraint is bound whole; binding adds its unemitted event count to ``pending``.
* The head is emitted when all its constraints are bound and every broadcast receiver
  (current worker covering a broadcast's tags) that does not get the event through a
  constraint has ``credit >= 1``. Emission: ``pending -= 1`` per distinct constraint,
  ``credit -= 1`` once per receiving worker. Events nobody receives emit freely.
  Emission is strictly in order, so the head's needs may use credit reserved for later
  events: that is what keeps big constraints and mid-map broadcasts from deadlocking.
* Removing a worker unbinds its constraints that still have unemitted events; they are
  rebound by the next ``bind``. Events already emitted to it are reported, not re-sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from dranspose_fast import _binding, _triggermap
from dranspose_fast.errors import MapError
from dranspose_fast.protocol import (
    GENERIC_WORKER,
    EventNumber,
    StreamName,
    WorkAssignment,
    WorkerName,
)

__all__ = ["DEFAULT_HORIZON", "DEFAULT_MAX_BATCH", "Batch", "BindableMap", "BindingEngine"]

#: Look-ahead of binding. Emission is in order, so binding further ahead never delivers
#: sooner; it only reserves credit (and shows the plan in /status). 64 events cover a few
#: credit windows while keeping the rescan of a stalled window (each bind call) < 1 µs.
DEFAULT_HORIZON = 64
#: Default cap on events per ``bind`` call (rows of the batch arrays).
DEFAULT_MAX_BATCH = 65536
_DEFAULT_TAGS = (GENERIC_WORKER,)


class BindableMap(Protocol):
    """What binding needs of a map (``MappingSequence`` is one)."""

    @property
    def compiled(self) -> _triggermap.TriggerMap: ...

    @property
    def tag_version(self) -> int:
        """Bumped when a new tag gets a bit: the engine then refreshes its workers' masks."""
        ...

    @property
    def closed(self) -> bool: ...

    @property
    def known_events(self) -> int: ...

    @property
    def streams(self) -> tuple[StreamName, ...]: ...

    def tag_mask(self, tags: Iterable[str]) -> int: ...


@dataclass(frozen=True)
class Batch:
    """Events emitted by one ``BindingEngine.bind`` call.

    ``present[i, s]`` is 0 when stream ``s`` has no frame in event ``first_event + i``;
    ``masks[i, s]`` has bit ``w`` set when worker slot ``w`` gets that frame (0 with present=1:
    discarded). ``bound`` rows are new bindings: instance, local constraint, worker slot,
    first event of the constraint. ``worker_names`` maps slots to names at bind time.
    """

    first_event: int
    count: int
    streams: tuple[StreamName, ...]
    present: npt.NDArray[np.uint8]
    masks: npt.NDArray[np.uint64]
    bound: npt.NDArray[np.int64]
    worker_names: Mapping[int, str]

    def workers(self, row: int, stream: int) -> list[WorkerName]:
        """Sorted names of the workers getting ``stream``'s frame in batch row ``row``."""
        m = int(self.masks[row, stream])
        return sorted(WorkerName(self.worker_names[w]) for w in range(64) if m >> w & 1)

    def to_assignments(self) -> list[WorkAssignment]:
        """0.2-style ``WorkAssignment`` per event (tests and small maps)."""
        out = []
        for i in range(self.count):
            a = {s: self.workers(i, j) for j, s in enumerate(self.streams) if self.present[i, j]}
            out.append(WorkAssignment(event_number=EventNumber(self.first_event + i),
                                      assignments=a))
        return out


class BindingEngine:
    """Credit-based constraint binding over a map (a ``BindableMap``: rules in the module doc).

    Parameters
    ----------
    seq : BindableMap
        The map; parts appended to it later are seen by the next ``bind``.
    horizon : int
        Events from the head within which constraints are bound ahead (>= 1).
    """

    def __init__(self, seq: BindableMap, horizon: int = DEFAULT_HORIZON) -> None:
        if type(horizon) is not int or horizon < 1:
            raise MapError(f"horizon must be an int >= 1, got {horizon!r}")
        self._seq = seq
        self._eng = _binding.Engine(seq.compiled, horizon)
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._wtags: dict[int, frozenset[str]] = {}
        self._tag_version = seq.tag_version

    def _slot(self, worker: str | int) -> int:
        w = self._ids.get(worker) if isinstance(worker, str) else worker
        if w is None or w not in self._names:
            raise MapError(f"unknown worker {worker!r}")
        return w

    def add_worker(self, name: str, tags: Iterable[str] = _DEFAULT_TAGS) -> int:
        """Register a worker; return its slot (0..63). It has no credit until ``grant``."""
        if isinstance(tags, str):
            raise MapError(f"worker {name!r}: tags must be a collection of strings, got {tags!r}")
        tagset = frozenset(tags)
        if not isinstance(name, str) or not name or name in self._ids:
            raise MapError(f"worker name {name!r} is empty or already registered")
        if not all(isinstance(t, str) and t for t in tagset):
            raise MapError(f"worker {name!r}: tags must be non-empty strings, got {set(tagset)}")
        w = int(self._eng.add_worker(self._seq.tag_mask(tagset)))
        self._ids[name] = w
        self._names[w] = name
        self._wtags[w] = tagset
        return w

    def remove_worker(self, worker: str | int) -> npt.NDArray[np.int64]:
        """Remove a worker; its unfinished constraints are rebound by the next ``bind``.

        Returns an int64 ``(n, 3)`` array: instance, local constraint, events of that
        constraint already emitted to the removed worker (the caller decides about those).
        """
        w = self._slot(worker)
        out = self._eng.remove_worker(w)
        del self._ids[self._names.pop(w)]
        del self._wtags[w]
        return out

    def grant(self, worker: str | int, n: int) -> None:
        """Give ``worker`` ``n >= 0`` more deliveries."""
        if type(n) is not int or n < 0:
            raise MapError(f"credit grant must be an int >= 0, got {n!r}")
        self._eng.grant(self._slot(worker), n)

    def credit(self, worker: str | int) -> int:
        return int(self._eng.credit(self._slot(worker)))

    def pending(self, worker: str | int) -> int:
        return int(self._eng.pending(self._slot(worker)))

    @property
    def workers(self) -> dict[str, int]:
        return dict(self._ids)

    @property
    def horizon(self) -> int:
        return int(self._eng.horizon)

    @property
    def next_event(self) -> int:
        """First event not yet emitted."""
        return int(self._eng.next_event)

    @property
    def finished(self) -> bool:
        """True when the sequence is closed and every event has been emitted."""
        return self._seq.closed and self.next_event >= self._seq.known_events

    def bound_worker(self, instance: int, local: int) -> str | None:
        """Name of the worker bound to constraint ``(instance, local)``, None if unbound."""
        w = int(self._eng.bound_worker(instance, local))
        return self._names.get(w) if w >= 0 else None

    def spanning(self, bound: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Which rows of a ``Batch.bound`` bind a constraint of more than one event (the
        bindings a controller taking over a scan needs: ``restore``)."""
        rows = np.ascontiguousarray(bound[:, :2], dtype=np.int64)
        return self._eng.spans(rows).astype(bool)

    def restore(self, next_event: int, bindings: Iterable[tuple[int, int, str]],
                credits: Mapping[str, int]) -> int:
        """Continue where an earlier engine over the same map stood (a controller took over).

        Events below ``next_event`` count as emitted; ``bindings`` (instance, local
        constraint, worker) keep a constraint of the instance at ``next_event`` that has
        emitted part of its events on its worker; ``credits`` set each registered worker's
        credit. Call it on a new engine, after ``add_worker``; returns the bindings kept.
        """
        rows = [(inst, local, self._ids[name]) for inst, local, name in bindings
                if name in self._ids]
        kept = int(self._eng.restore(next_event, np.array(rows, np.int64).reshape(-1, 3)))
        for name, credit in credits.items():
            w = self._slot(name)
            self._eng.grant(w, credit - int(self._eng.credit(w)))
        return kept

    def bind(self, max_events: int = DEFAULT_MAX_BATCH) -> Batch:
        """Bind constraints and emit up to ``max_events`` events as credits allow."""
        if type(max_events) is not int or max_events < 0:
            raise MapError(f"max_events must be an int >= 0, got {max_events!r}")
        if self._seq.tag_version != self._tag_version:
            for w, tags in self._wtags.items():
                self._eng.set_mask(w, self._seq.tag_mask(tags))
            self._tag_version = self._seq.tag_version
        first = self.next_event
        left = max(0, min(max_events, self._seq.known_events - first))
        S = len(self._seq.streams)
        # rows sized by the credit on hand (events nobody receives need none): grow once
        # if they fill up, so a call that emits a few events allocates little
        rows = min(left, max(1024, int(self._eng.positive_credit)))
        present = np.empty((rows, S), dtype=np.uint8)
        masks = np.empty((rows, S), dtype=np.uint64)
        count, bound = self._eng.bind(present, masks)
        if count == rows < left:
            big_p = np.empty((left, S), dtype=np.uint8)
            big_m = np.empty((left, S), dtype=np.uint64)
            big_p[:rows], big_m[:rows] = present, masks
            more, bound = self._eng.bind(big_p[rows:], big_m[rows:], True)
            present, masks, count = big_p, big_m, count + more
        return Batch(first, count, self._seq.streams, present[:count], masks[:count], bound,
                     dict(self._names))
