"""What a running scan waits for: no stall goes unreported, no restart goes unnoticed.

Per check (``check_interval``), never per event:

* ``StallWatch``: a scan that has events pending (not yet bound, held by a worker, or whose
  results the reducer has not reduced) and makes no progress for ``stall_timeout`` seconds is
  *stalled*: ``/api/v1/status`` says exactly what it waits for (the event and the tags or
  credit it needs, the workers holding events, the results not reduced, the ingesters that
  routed fewer events than were assigned), and the log says it once at ERROR.
* ``reducer_restarted``: the reducer's service uuid changed since the scan started (a new
  process under the same name): the results the old one reduced are not in the new one's
  publish, so the controller ends the scan with ``reason: "reducer restarted"``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from pydantic import UUID4

from dranspose_fast.controller.answers import StallReport
from dranspose_fast.controller.ensemble import Configs, WorkerConfig
from dranspose_fast.controller.scan import LOST_WITH_WORKERS, ScanState
from dranspose_fast.errors import MapError
from dranspose_fast.protocol import IngesterState

__all__ = [
    "REDUCER_RESTARTED", "StallWatch", "end_for_reducer_restart", "lose_expired_workers",
    "not_in_publish", "not_ready_workers", "ready_workers", "reducer_restarted",
    "uncovered_tags", "waiting_for",
]

#: The reason of a scan ended because its reducer was replaced.
REDUCER_RESTARTED = "reducer restarted"

logger = logging.getLogger("dranspose_fast.controller")

#: Most lines a stall report lists (a scan with many workers would flood the status).
MAX_LINES = 20


def ready_workers(workers: Iterable[WorkerConfig]) -> list[WorkerConfig]:
    """Workers that can take events: their class loaded and started (no ``class_error``)."""
    return [w for w in workers if not (w.model_extra or {}).get("class_error")]


def uncovered_tags(tag_sets: Iterable[frozenset[str]],
                   workers: Iterable[WorkerConfig]) -> list[list[str]]:
    """Tag sets of a map that no worker covers (a worker covers a set if it has every tag)."""
    have = [frozenset(w.tags) for w in workers]
    return [sorted(ts) for ts in tag_sets if not any(ts <= h for h in have)]


def not_ready_workers(workers: Iterable[WorkerConfig]) -> dict[str, str]:
    """Workers that take no events, with the error of their class."""
    return {str(w.name): str((w.model_extra or {}).get("class_error"))
            for w in workers if (w.model_extra or {}).get("class_error")}


def reducer_restarted(scan_reducer: UUID4 | None, cfg: Configs) -> bool:
    """The reducer of the scan was replaced by a new process (a different service uuid)."""
    reducer = cfg.ensemble.reducer
    return (scan_reducer is not None and reducer is not None
            and reducer.service_uuid != scan_reducer)


def retention_on(ingesters: Iterable[IngesterState]) -> bool:
    """Every ingester keeps what it sent until it is released (a lost worker's deliveries
    can be resent); with none there is nothing to resend either."""
    found = list(ingesters)
    return bool(found) and all(i.retention_events > 0 for i in found)


def lose_expired_workers(scan: ScanState, live: set[str], counters: dict[str, int]) -> None:
    """Remove the scan's workers whose config expired; count and log what they held."""
    for name in [n for n in scan.workers if n not in live]:
        info = scan.lose_worker(name)
        counters["workers_lost"] += 1
        counters[LOST_WITH_WORKERS] += info.events_lost
        log = logger.error if info.events_lost else logger.warning
        log("worker %s lost in scan %s (config expired): %d events lost, %d deliveries "
            "rebound to %s, %d constraints rebound", name, scan.uuid, info.events_lost,
            info.events_rebound, info.rebound_to, info.constraints_rebound)


def not_in_publish(scan: ScanState, cfg: Configs) -> int:
    """Results the workers of ``scan`` sent that the reducer now running does not hold: they
    went to the one that died (its publish is gone). Computed again at every ``/status``:
    results still in the workers' outboxes when the scan ended reach the new reducer."""
    sent = sum(t.results for t in scan.workers.values())
    taken = int(cfg.counters.get("reducer:reducer", {}).get("results", 0))
    return max(0, sent - taken)


def end_for_reducer_restart(scan: ScanState, cfg: Configs) -> None:
    """End ``scan``: its reducer was replaced, what the old one reduced is not in publish."""
    missing = scan.counters["results_not_in_publish"] = not_in_publish(scan, cfg)
    scan.end(REDUCER_RESTARTED)
    scan.update_pending = True
    logger.error("scan %s ended: the reducer restarted; %d results the workers had sent are "
                 "not in the new reducer's publish", scan.uuid, missing)


class StallWatch:
    """Notices a scan that stopped progressing; one instance per scan."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._mark: tuple[int, ...] = ()
        self._since = 0.0
        self._logged = False

    def check(self, scan: ScanState, cfg: Configs, routed_at_start: Mapping[str, int],
              now: float) -> StallReport | None:
        """The report if ``scan`` is stalled now, else None (logs the first report once)."""
        mark = _progress_mark(scan)
        if mark != self._mark:
            self._mark, self._since, self._logged = mark, now, False
            return None
        if scan.finished or now - self._since < self.timeout or not _pending(scan):
            return None
        report = StallReport(seconds=round(now - self._since, 1),
                             waiting_for=waiting_for(scan, cfg, routed_at_start)[:MAX_LINES])
        if not self._logged:
            self._logged = True
            logger.error("scan %s made no progress for %.0f s; it waits for: %s", scan.uuid,
                         report.seconds, "; ".join(report.waiting_for) or "nothing known")
        return report


def _progress_mark(scan: ScanState) -> tuple[int, ...]:
    tracks = scan.workers.values()
    return (scan.engine.next_event, len(scan.workers), len(scan.lost),
            sum(t.deliveries for t in tracks), sum(t.processed for t in tracks),
            sum(t.results for t in tracks), sum(scan.reduced.values()))


def _pending(scan: ScanState) -> bool:
    if scan.seq.closed and not scan.engine.finished:
        return True
    if scan.engine.next_event < scan.seq.known_events:
        return True
    return any(t.outstanding or scan.reduced.get(n, 0) < t.results
               for n, t in scan.workers.items())


def waiting_for(scan: ScanState, cfg: Configs, routed_at_start: Mapping[str, int]) -> list[str]:
    """Plain statements of what the scan waits for, most specific first."""
    out: list[str] = []
    nxt = scan.engine.next_event
    if nxt < scan.seq.known_events:
        out += _unbound(scan, nxt)
    for name, track in sorted(scan.workers.items()):
        if track.outstanding:
            first = int(track.outstanding_events()[0])
            out.append(f"worker {name} holds {track.outstanding} assigned events not yet "
                       f"processed (the first is event {first})")
    for name, track in sorted(scan.workers.items()):
        reduced = scan.reduced.get(name, 0)
        if reduced < track.results:
            out.append(f"the reducer has reduced {reduced} of the {track.results} results of "
                       f"worker {name}")
    if cfg.ensemble.reducer is None:
        out.append("the reducer: it has no config (not running?)")
    for ing in cfg.ensemble.ingesters:
        key = f"ingester:{ing.name}"
        routed = int(cfg.counters.get(key, {}).get("counters.events_routed", 0))
        routed -= routed_at_start.get(ing.name, 0)
        if 0 <= routed < nxt:
            out.append(f"ingester {ing.name} (streams {', '.join(ing.streams)}) routed "
                       f"{routed} of the {nxt} events assigned so far: it waits for frames "
                       "(a missing series start, an early series end or a stopped source)")
    return out


def _unbound(scan: ScanState, event: int) -> list[str]:
    """Why event ``event`` is not bound: the tags it needs, and who could give credit."""
    try:
        cells = scan.seq.get_event_cells(event)
    except (MapError, IndexError, ValueError):
        return [f"event {event}: not in the map yet"]
    needed: dict[frozenset[str], list[str]] = {}
    for stream, cell in cells.items():
        for vw in cell or []:
            needed.setdefault(frozenset(vw.tags), []).append(str(stream))
    out = []
    for tags, streams in needed.items():
        able = [n for n, t in scan.workers.items() if tags <= frozenset(t.tags)]
        shown = sorted(tags)
        if not able:
            out.append(f"event {event} (streams {', '.join(sorted(set(streams)))}) needs a "
                       f"worker with tags {shown}: no live worker has them")
        elif all(scan.engine.credit(n) <= 0 for n in able):
            out.append(f"event {event} needs credit from a worker with tags {shown}: "
                       f"{', '.join(sorted(able))} have none left")
    return out
