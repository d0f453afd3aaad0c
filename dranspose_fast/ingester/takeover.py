"""The ingester's part when a worker is lost: resend what it held, route its rows elsewhere.

Applied by the data loop, in the order of the scan's assignment stream: a ``Release`` frees
retained batches; a ``Rebind`` sends the retained batches of a lost worker's key to the worker
that takes over (as ``dataplane.rebound_frames``, kept again under the new key), drops what
was still queued for the lost worker (it is among them) and redirects the rows of that key
not yet routed. Rules and costs: docs/protocol.md, "Retention and rebinding".
"""

from __future__ import annotations

import logging

from dranspose_fast.ingester.links import WorkerLinks
from dranspose_fast.ingester.retention import Rebound
from dranspose_fast.ingester.routing import ScanState
from dranspose_fast.runtime.redis_messages import ControlEntry, Rebind, Release

__all__ = ["apply_control"]


def apply_control(scan: ScanState, links: WorkerLinks, entry: ControlEntry,
                  log: logging.Logger) -> None:
    """Apply one control entry of the scan's assignment stream (``Joined`` needs nothing)."""
    retention = links.retention
    if isinstance(entry, Release):
        for key, below in entry.below.items():
            retention.release(key, below)
    elif isinstance(entry, Rebind):
        to = Rebound(entry.new_key, entry.origin, entry.target)
        links.forget(entry.holder)
        resent = 0
        for kept in retention.take(entry.key):
            links.send_frames(to, kept.frames, kept.nevents, kept.last_event)
            resent += kept.nevents
        retention.resent += resent
        for pb in scan.pending:
            pb.redirect(entry.key, entry.holder, to)
        log.warning("worker %s lost: %d retained events of %s resent to %s as %s",
                    entry.holder, resent, entry.key, entry.target, entry.new_key)
