"""A worker's side of retention: its done-marks, and the deliveries it takes over.

When a worker is lost, the controller rebinds each key it held (``Rebind``) to one live
worker; the ingesters resend the retained frames as ``dataplane.rebound_frames``. This module
keeps, per key taken over, the events expected and their assembly (apart from the worker's
own events: the same event number may be the worker's own delivery too), marks each event
built as rebound (``EventData.rebound_from``), and computes the done-marks of every key the
worker holds (``CreditMessage.done``). No sockets, no threads: owned by the data thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dranspose_fast.event import EventData, mark_rebound
from dranspose_fast.runtime.redis_messages import Rebind
from dranspose_fast.worker.parts import Assembler, PartialEvent

__all__ = ["Takeovers"]

#: Batches of a key whose ``Rebind`` entry has not been read yet, kept per key (the resend
#: can overtake the entry: ingesters and the worker read the stream independently).
MAX_EARLY_BATCHES = 4096


@dataclass
class _Part:
    """The deliveries of one key taken over from a lost worker."""

    origin: str
    wanted: set[int]
    last: int
    assembler: Assembler = field(default_factory=Assembler)

    def add(self, events: list[PartialEvent]) -> tuple[list[EventData], int]:
        """Assemble the wanted events; returns the ready ones and how many were not wanted
        (released before the rebind: another copy of them was reduced already)."""
        wanted = [e for e in events if e[0] in self.wanted]
        ready = self.assembler.add(wanted)
        for event in ready:
            self.wanted.discard(event.event_number)
            mark_rebound(event, self.origin)
        return ready, len(events) - len(wanted)

    def done_below(self) -> int:
        return min(self.wanted, default=self.last + 1)


class Takeovers:
    """The keys a worker took over in the current scan."""

    def __init__(self) -> None:
        self.parts: dict[str, _Part] = {}
        self._early: dict[str, list[list[PartialEvent]]] = {}
        #: Events received for a key but not wanted (already released elsewhere).
        self.unwanted = 0
        #: Batches dropped because too many came before their ``Rebind`` entry.
        self.dropped_early = 0

    def rebind(self, entry: Rebind) -> list[tuple[str, list[EventData]]]:
        """Take over ``entry``'s key; returns (origin, events) already complete."""
        part = _Part(entry.origin, set(entry.events), max(entry.events, default=-1))
        self.parts[entry.new_key] = part
        ready = part.assembler.expect(entry.events, entry.counts)
        for event in ready:
            part.wanted.discard(event.event_number)
            mark_rebound(event, part.origin)
        out = [(part.origin, ready)] if ready else []
        for events in self._early.pop(entry.new_key, []):
            got, unwanted = part.add(events)
            self.unwanted += unwanted
            if got:
                out.append((part.origin, got))
        return out

    def add(self, key: str, events: list[PartialEvent]) -> list[EventData]:
        """Partial events resent under ``key``; returns those now complete."""
        part = self.parts.get(key)
        if part is None:
            early = self._early.setdefault(key, [])
            if len(early) < MAX_EARLY_BATCHES:
                early.append(events)
            else:
                self.dropped_early += 1
            return []
        ready, unwanted = part.add(events)
        self.unwanted += unwanted
        return ready

    def origin(self, key: str) -> str | None:
        part = self.parts.get(key)
        return part.origin if part is not None else None

    def done(self) -> dict[str, int]:
        """The done-mark of every key taken over (a part wholly done stays at its end)."""
        return {key: part.done_below() for key, part in self.parts.items()}

    @property
    def waiting(self) -> int:
        return sum(len(p.wanted) for p in self.parts.values())
