"""Events whose data an ingester lost in a crash: found, dropped whole and counted.

A restarted ingester resumes its streams (docs/protocol.md, "Ingester resume"): it fills the
rows it cannot deliver any more with *lost placeholders*, messages of zero frames (a real
upstream message always has at least one).  A worker checks for them only once an ingester
restarted during its scan, so the hot path of a healthy scan pays nothing.  An event with a
placeholder never reaches user code: it is counted as processed (its credit and done-mark
flow as usual) and as lost, per stream, in the credit reports the controller sums into
``/api/v1/status`` ``lost_upstream``.
"""

from __future__ import annotations

import logging

from dranspose_fast.event import EventData

__all__ = ["UpstreamLosses"]

#: Event numbers kept per stream for the reports (the counts are exact).
FIRST_KEPT = 20


class UpstreamLosses:
    """What one scan lost upstream, per stream; owned by the worker's data thread."""

    def __init__(self) -> None:
        #: Set once an ingester restarted in this scan: from then on events are checked.
        self.checking = False
        self.events: dict[str, int] = {}
        self.first: dict[str, list[int]] = {}

    def keep(self, ready: list[EventData], log: logging.Logger, worker: str) -> list[EventData]:
        """The events of ``ready`` with data in every stream; the others are counted."""
        kept: list[EventData] = []
        for event in ready:
            lost = [name for name, data in event.streams.items() if not data.frames]
            if not lost:
                kept.append(event)
                continue
            evn = event.event_number
            for name in lost:
                n = self.events[name] = self.events.get(name, 0) + 1
                first = self.first.setdefault(name, [])
                if len(first) < FIRST_KEPT:
                    first.append(evn)
                if n == 1:
                    log.error("worker %s: event %d lost its %s frame in an ingester restart; "
                              "such events are dropped and counted", worker, evn, name)
        return kept
