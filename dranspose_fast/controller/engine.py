"""The controller: one per Redis; owns the map and the parameters, binds, decides the finish.

Threads, not asyncio (like every component): a binding loop reads the scan's credit and
reduced streams (``XREAD BLOCK``) and publishes one assignment batch per bind; a housekeeping
loop notices Redis restarts (``run_id``), removes workers whose config expired and sets
parameter defaults; a child process renews the lock (``lock.py``). The REST API
(``routes.py``) calls the public methods; deployments run
``uvicorn dranspose_fast.controller:app``.
Per-scan bookkeeping (and the writing of a scan's dumps) lives in ``scan.py``; settings and the
reading of component configs and parameter descriptions in ``ensemble.py``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import redis
from pydantic import UUID4

from dranspose_fast.controller.answers import Progress, Status, WorkerLoad
from dranspose_fast.controller.dumps import dump_scan
from dranspose_fast.controller.ensemble import (
    Configs,
    ControllerSettings,
    EnsembleState,
    RequestError,
    Streams,
    as_streams,
    read_configs,
    read_logs,
)
from dranspose_fast.controller.lock import ControllerLock
from dranspose_fast.controller.parameters import DUMP_PREFIX, ParameterStore
from dranspose_fast.controller.resume import SequenceChange, save_change, save_sequence
from dranspose_fast.controller.scan import LOST_WITH_WORKERS, LossLog, ScanState, loss_totals
from dranspose_fast.controller.takeover import Takeover, read_takeover, take_over_scan
from dranspose_fast.controller.watch import (
    REDUCER_RESTARTED,
    StallWatch,
    end_for_reducer_restart,
    lose_expired_workers,
    not_in_publish,
    not_ready_workers,
    ready_workers,
    reducer_restarted,
    retention_on,
    uncovered_tags,
)
from dranspose_fast.errors import MapError
from dranspose_fast.helpers.utils import parameters_hash
from dranspose_fast.mapping import MappingSequence
from dranspose_fast.protocol import ParameterName, WorkParameter
from dranspose_fast.runtime.redis_messages import (
    ControllerUpdate,
    Keys,
    credit_decoder,
    encode_control,
    reduced_decoder,
)
from dranspose_fast.runtime.service import Lifecycle, RedisLogHandler, connect

__all__ = ["Controller"]

#: Shortest time between two release entries of a scan (they free the ingesters' retention).
RELEASE_INTERVAL = 0.01

logger = logging.getLogger(__name__)


# === the controller ===


class Controller(ParameterStore, Lifecycle):
    """The single controller of a Redis: lock, scans, binding loop, parameters, dumps.

    Parameters
    ----------
    settings : ControllerSettings, optional
        Read from the environment when omitted.

    ``start()`` takes the lock and starts the threads, ``close()`` stops them; ``run()`` does
    both around a wait for SIGTERM/SIGINT (the CLI serves it over HTTP instead: ``run`` of
    ``dranspose_fast.controller``).
    """

    def __init__(self, settings: ControllerSettings | None = None) -> None:
        self.settings = settings if settings is not None else ControllerSettings()
        self.redis = connect(self.settings)
        self.uuid = uuid.uuid4()
        self.scan: ScanState | None = None
        self.parameters: dict[ParameterName, WorkParameter] = {}
        self.parameters_hash = parameters_hash(self.parameters)
        self.counters: dict[str, int] = {
            "invalid_configs": 0, "invalid_descriptions": 0, "dump_errors": 0,
            "redis_errors": 0, "redis_restarts": 0, "workers_lost": 0, LOST_WITH_WORKERS: 0,
            "scans_ended_by_restart": 0, "scans_resumed": 0,
        }
        self._losses = LossLog(logger)
        self._lock = threading.RLock()  # scan and parameter state
        self._post_lock = threading.Lock()  # one mapping change at a time
        self._cfg_lock = threading.Lock()
        self._cfg: Configs | None = None
        self._bad_keys: set[bytes] = set()
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._run_id: str | None = None
        self.lock = ControllerLock(self.redis, str(self.uuid), self.settings)
        self._log_handler: RedisLogHandler | None = None
        self._redis_down = False
        #: Set when another controller took the lock: this one stopped serving.
        self.lock_lost = False
        #: Called (the lock keeper's reader thread) when the lock is lost; the server then stops.
        self.on_lock_lost: Callable[[], None] | None = None
        self._stall = StallWatch(self.settings.stall_timeout)
        self.started = False

    # === lifecycle ===

    def start(self) -> None:
        """Take the lock (waiting up to ``lock_timeout``) and start the background threads;
        returns then (``close()`` stops them, ``run()`` blocks until stopped).

        Raises
        ------
        ControllerLockError
            if another controller keeps the lock for longer than ``lock_timeout``.
        """
        self.lock.acquire(self.stop_event)
        self._run_id = self._redis_run_id()
        self._take_over(read_takeover(self.redis))
        if not any(isinstance(h, RedisLogHandler) for h in logging.getLogger().handlers):
            # the CLI may already send every record to redis; never twice
            self._log_handler = RedisLogHandler(self.redis, "controller")
            logging.getLogger("dranspose_fast.controller").addHandler(self._log_handler)
        self.started = True
        self.lock.keep(self._lock_lost)  # a process of its own (controller/lock.py)
        loops = ((self._bind_loop, "bind"), (self._housekeeping, "housekeeping"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=f"controller-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("controller %s started", self.uuid)

    def close(self) -> None:
        """Stop the threads and delete the controller's keys (scans, parameters, lock);
        idempotent."""
        if not self.begin_close():
            return
        self._wake.set()
        self.lock.stop_keeping()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._log_handler is not None:
            logging.getLogger("dranspose_fast.controller").removeHandler(self._log_handler)
            self._log_handler = None
        if self.started and not self.lock_lost:
            try:
                keys = [Keys.UPDATES]
                for pattern in Keys.SCAN_PATTERNS:
                    keys += [k.decode() for k in self.redis.scan_iter(match=pattern, count=1000)]
                self.redis.delete(*keys)
                self.lock.release()
            except redis.RedisError as exc:
                logger.warning("could not clean up redis on close: %s", exc)
        self.started = False
        self.redis.close()
        logger.info("controller %s closed", self.uuid)

    # === lock and redis restarts ===

    def _lock_lost(self) -> None:
        """Another controller holds the lock now: stop, and leave its keys alone."""
        self.lock_lost = True
        self.stop_event.set()
        self._wake.set()
        if self.on_lock_lost is not None:
            self.on_lock_lost()

    def _take_over(self, found: Takeover) -> None:
        """Adopt the previous controller's parameters; resume a scan it left running."""
        with self._lock:
            if found.parameters:
                self.parameters = dict(found.parameters)
                self.parameters_hash = parameters_hash(self.parameters)
                logger.info("took over parameters %s", sorted(self.parameters))
            if not found.orphaned_scan:
                return
            scan = take_over_scan(self.redis, found, self._configs(max_age=0))
            if scan is None:
                self.counters["scans_ended_by_restart"] += 1
                return
            self.scan = scan
            self._stall = StallWatch(self.settings.stall_timeout)
            self.counters["scans_resumed"] += 1

    def _redis_run_id(self) -> str:
        return str(self.redis.info("server").get("run_id"))

    def _check_redis_restart(self) -> None:
        run_id = self._redis_run_id()
        if self._redis_down:
            logger.info("redis is reachable again")
            self._redis_down = False
        if self._run_id is None or run_id == self._run_id:
            self._run_id = run_id
            return
        self._run_id = run_id
        self.counters["redis_restarts"] += 1
        with self._lock:
            scan = self.scan
            running = scan is not None and not scan.finished
            logger.warning("redis restarted (new run_id %s): %s", run_id,
                           f"scan {scan.uuid} ended" if running and scan else "no scan running")
            self.lock.renew()
            self._rewrite_parameters()
            if scan is not None and not scan.finished:
                scan.end("redis restarted")
            self._publish_update()
        with self._cfg_lock:
            self._cfg = None

    def _redis_trouble(self, exc: Exception) -> None:
        self.counters["redis_errors"] += 1
        if not self._redis_down:
            logger.warning("redis unavailable (%s); retrying", exc)
            self._redis_down = True

    # === configs ===

    def _configs(self, max_age: float | None = None) -> Configs:
        age = self.settings.config_cache if max_age is None else max_age
        with self._cfg_lock:
            if self._cfg is not None and time.monotonic() - self._cfg.at <= age:
                return self._cfg
        with self._lock:
            params, phash = dict(self.parameters), self.parameters_hash
        cfg, invalid = read_configs(self.redis, params, phash, self._bad_keys)
        self.counters["invalid_configs"] = invalid  # a gauge: configs invalid right now
        with self._cfg_lock:
            self._cfg = cfg
        return cfg

    def configs(self, max_age: float | None = None) -> EnsembleState:
        """The ensemble from ``dfast:config:*`` (cached ``config_cache`` seconds)."""
        return self._configs(max_age).ensemble

    # === mapping ===

    def set_sequence(self, seq: MappingSequence, require_workers: bool = True) -> UUID4:
        """Start a scan with ``seq``; returns its mapping uuid once every component has it.

        ``require_workers=False`` (the Sardana hook, as in 0.2) starts it with fewer workers
        than the map needs: events wait for workers that join later.

        Raises
        ------
        RequestError
            400 if streams are unavailable or workers too few; 503 if some component did
            not take the new mapping within ``mapping_timeout`` (the scan runs anyway).
        """
        with self._post_lock:
            full = self._configs(max_age=0)
            cfg = full.ensemble
            missing = set(seq.streams) - set(cfg.get_streams())
            if missing:
                names = ", ".join(repr(s) for s in sorted(missing))
                logger.warning("refused a map: streams {%s} not available", names)
                raise RequestError(400, f"streams {{{names}}} not available")
            ready = ready_workers(cfg.workers)
            need, have = seq.min_workers(), len(ready)
            if have < need and require_workers:
                logger.warning("refused a map: only %d workers available, but %d required",
                               have, need)
                raise RequestError(400, f"only {have} workers available, but {need} required")
            uncovered = uncovered_tags(seq.tag_sets, ready)
            if uncovered and require_workers:
                logger.warning("refused a map: no worker has the tags %s", uncovered)
                raise RequestError(400, f"no available worker has the tags {uncovered} that "
                                   "the map's virtual workers need")
            scan = ScanState(uuid.uuid4(), seq)
            try:
                for w in ready:
                    scan.add_worker(w.name, w.tags, str(w.service_uuid))
            except MapError as exc:
                raise RequestError(400, f"cannot use the workers: {exc}") from None
            scan.reducer_uuid = cfg.reducer.service_uuid if cfg.reducer is not None else None
            scan.retention = retention_on(cfg.ingesters)
            scan.resumed.update({s: r.exact for ing in cfg.ingesters
                                 for s, r in ing.resumed.items() if r.mapping_uuid == scan.uuid})
            scan.routed_at_start = {
                i.name: int(full.counters.get(f"ingester:{i.name}", {}).get(
                    "counters.events_routed", 0)) for i in cfg.ingesters}
            self._stall = StallWatch(self.settings.stall_timeout)
            save_sequence(self.redis, scan.uuid, seq)  # a controller taking over reads it
            with self._lock:
                old, self.scan = self.scan, scan
                if old is not None and not old.finished:
                    old.end(f"replaced by mapping {scan.uuid}")
                    logger.warning("scan %s aborted by a new mapping", old.uuid)
                self._publish_update()
            if old is not None:
                self.redis.delete(*Keys.of_scan(old.uuid))
            self._wake.set()
            logger.info("new mapping %s: %s events, streams %s", scan.uuid,
                        seq.total_events if seq.closed else "open", list(seq.streams))
            waiting = self._await_mapping(scan.uuid)
            self._write_dumps(scan)
            if waiting:
                msg = (f"mapping {scan.uuid} not taken within "
                       f"{self.settings.mapping_timeout:g} s by: {', '.join(waiting)}")
                logger.error(msg)
                raise RequestError(503, msg)
            logger.info("mapping %s distributed", scan.uuid)
            return scan.uuid

    def _await_mapping(self, uid: UUID4) -> list[str]:
        deadline = time.monotonic() + self.settings.mapping_timeout
        while True:
            cfg = self.configs(max_age=0)
            waiting = [f"ingester {i.name}" for i in cfg.ingesters if i.mapping_uuid != uid]
            waiting += [f"worker {w.name}" for w in cfg.workers if w.mapping_uuid != uid]
            if cfg.reducer is None:
                waiting.append("reducer (no config)")
            elif cfg.reducer.mapping_uuid != uid:
                waiting.append("reducer")
            if not waiting or time.monotonic() >= deadline or self.stop_event.is_set():
                return waiting
            time.sleep(0.02)

    def append(self, parts: dict[str, Any], sequence: list[str]) -> ScanState:
        """Append part instances (defining ``parts`` first) to the running open sequence."""
        with self._lock:
            scan = self._open_scan()
            known = set(scan.seq.part_names) | set(parts)
            unknown = [n for n in sequence if n not in known]
            if unknown:
                raise RequestError(400, f"unknown parts {unknown} (defined: {sorted(known)})")
            defined: list[str] = []
            try:
                for name, cells in parts.items():
                    scan.seq.add_part(name, cells)
                    defined.append(name)
                need = max((scan.seq.part_min_workers(n) for n in set(sequence)), default=0)
                if need > len(scan.workers):
                    raise MapError(f"only {len(scan.workers)} workers in the scan, but the "
                                   f"appended parts need {need}")
                scan.seq.append(sequence)
                save_change(self.redis, scan.uuid, SequenceChange(
                    kind="append", parts=parts, sequence=sequence))
            except MapError as exc:
                scan.seq.forget_parts(defined)  # a refused append leaves nothing behind
                raise RequestError(400, str(exc)) from None
            self._advance(scan)
            return scan

    def close_sequence(self) -> ScanState:
        """Close the running open sequence: its length becomes known."""
        with self._lock:
            scan = self._open_scan(allow_closed=True)
            scan.seq.close()
            save_change(self.redis, scan.uuid, SequenceChange(kind="close"))
            logger.info("sequence of scan %s closed at %d events", scan.uuid,
                        scan.seq.known_events)
            self._advance(scan)
            return scan

    def _open_scan(self, allow_closed: bool = False) -> ScanState:
        scan = self.scan
        if scan is None or scan.finished:
            raise RequestError(409, "no scan is running")
        if scan.seq.closed and not allow_closed:
            raise RequestError(409, f"the sequence of scan {scan.uuid} is closed "
                                    "(post it with ?open=true to append)")
        return scan

    def stop(self) -> bool:
        """End the running scan with reason "stopped"; False if none was running."""
        with self._lock:
            scan = self.scan
            if scan is None or scan.finished:
                return False
            logger.info("scan %s stopped externally", scan.uuid)
            scan.end("stopped")
            scan.update_pending = True
            self._flush_update(scan)
            return True

    # === updates ===

    def _update(self) -> ControllerUpdate:
        scan = self.scan
        return ControllerUpdate(
            mapping_uuid=scan.uuid if scan else None,
            parameters_version={n: p.uuid for n, p in self.parameters.items()},
            target_parameters_hash=self.parameters_hash,
            streams=scan.streams if scan else [], active_streams=scan.streams if scan else [],
            finished=scan.finished if scan else False, reason=scan.reason if scan else None)

    def _publish_update(self) -> None:
        self.redis.xadd(Keys.UPDATES, {"d": self._update().model_dump_json()}, maxlen=100,
                        approximate=True)

    def _flush_update(self, scan: ScanState) -> None:
        if scan.update_pending and scan is self.scan:
            self._publish_update()
        scan.update_pending = False

    # === binding ===

    def _bind_loop(self) -> None:
        while not self.stop_event.is_set():
            with self._lock:
                scan = self.scan
            if scan is None or scan.finished:
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            try:
                answer = self.redis.xread(
                    {Keys.credits(scan.uuid): scan.credit_id,
                     Keys.reduced(scan.uuid): scan.reduced_id},
                    count=1000, block=self.settings.block_ms)
                found = as_streams(answer)
            except redis.RedisError as exc:
                self._redis_trouble(exc)
                self.stop_event.wait(0.2)
                continue
            try:
                with self._lock:
                    if self.scan is not scan:
                        continue
                    self._consume(scan, found)
                    self._advance(scan)
            except redis.RedisError as exc:
                self._redis_trouble(exc)
                self.stop_event.wait(0.2)
            except Exception:
                logger.exception("binding loop error in scan %s", scan.uuid)
                self.stop_event.wait(0.2)

    def _consume(self, scan: ScanState, entries: Streams) -> None:
        credits_key = Keys.credits(scan.uuid).encode()
        tags_of = self._tags_lookup()
        for key, items in entries:
            is_credit = key == credits_key
            for entry_id, fields in items:
                try:
                    if is_credit:
                        scan.credit_id = entry_id
                        scan.credit(credit_decoder.decode(fields[b"d"]), tags_of)
                    else:
                        scan.reduced_id = entry_id
                        scan.reduce(reduced_decoder.decode(fields[b"d"]))
                except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
                    name = "malformed_credits" if is_credit else "malformed_reduced"
                    scan.counters[name] += 1
                    if scan.counters[name] <= 10:
                        logger.error("ignored a malformed %s entry %s: %s", name[10:],
                                     entry_id.decode(), exc)

    def _tags_lookup(self) -> Callable[[str], Iterable[str] | None]:
        def tags_of(name: str) -> Iterable[str] | None:
            tags = self.configs().tags_of(name)
            return tags if tags is not None else self.configs(max_age=0).tags_of(name)

        return tags_of

    def _advance(self, scan: ScanState) -> None:
        """Publish pending batches, bind what credits allow, finish when done (lock held)."""
        key = Keys.assigned(scan.uuid)
        while scan.outbox:
            self.redis.xadd(key, scan.outbox[0])  # type: ignore[arg-type]
            scan.outbox.popleft()
        if not scan.finished:
            for _ in range(1024):
                batch = scan.engine.bind()
                if batch.count == 0:
                    scan.note_bindings(batch)  # constraints bound ahead of emission
                    break
                scan.outbox.append(scan.record(batch))
                self.redis.xadd(key, scan.outbox[0])  # type: ignore[arg-type]
                scan.outbox.popleft()
            now = time.monotonic()
            if now >= scan.next_release:  # at most one release entry per RELEASE_INTERVAL
                release = scan.ledger.release_entry()
                if release is not None:
                    self.redis.xadd(key, encode_control(release))  # type: ignore[arg-type]
                    scan.next_release = now + RELEASE_INTERVAL
            if scan.complete():
                scan.end(scan.completion_reason())
                scan.update_pending = True
                logger.info("scan %s finished: %d events", scan.uuid, scan.engine.next_event)
        self._flush_update(scan)

    def _check_workers(self) -> None:
        with self._lock:
            scan = self.scan
        if scan is None or scan.finished:
            return
        full = self._configs()
        cfg = full.ensemble
        live = {str(w.name) for w in cfg.workers}
        with self._lock:
            if self.scan is not scan or scan.finished:
                return
            scan.retention = retention_on(cfg.ingesters)
            scan.resumed.update({s: r.exact for ing in cfg.ingesters
                                 for s, r in ing.resumed.items() if r.mapping_uuid == scan.uuid})
            lose_expired_workers(scan, live, self.counters)
            if scan.unknown:
                scan.adopt_unknown(cfg.tags_of)
            if reducer_restarted(scan.reducer_uuid, full):
                end_for_reducer_restart(scan, full)
                self._flush_update(scan)
                return
            self._advance(scan)
            scan.stalled = self._stall.check(scan, full, scan.routed_at_start, time.monotonic())

    # === housekeeping ===

    def _housekeeping(self) -> None:
        s = self.settings
        due = {"check": 0.0, "defaults": 0.0}
        while not self.stop_event.wait(0.05):
            now = time.monotonic()
            try:
                if now >= due["check"]:
                    due["check"] = now + s.check_interval
                    self._check_redis_restart()
                    self._check_workers()
                    self._losses.update(loss_totals(self._configs().counters, self._counters()))
                if now >= due["defaults"]:
                    due["defaults"] = now + s.defaults_interval
                    self._apply_defaults()
            except redis.RedisError as exc:
                self._redis_trouble(exc)
            except Exception:
                logger.exception("controller housekeeping failed")

    # === dumps ===

    def _write_dumps(self, scan: ScanState) -> None:
        with self._lock:
            params = dict(self.parameters)
            body = scan.seq.to_sequence_json() if params.get(DUMP_PREFIX) else None
        if body is not None and not dump_scan(params[DUMP_PREFIX].data, scan.uuid, body, params):
            self.counters["dump_errors"] += 1

    # === reports ===

    def progress(self) -> Progress:
        with self._lock:
            return self.scan.progress() if self.scan is not None else Progress()

    def status(self) -> Status:
        cfg = self._configs()
        not_ready = not_ready_workers(cfg.ensemble.workers)
        with self._lock:
            counters = self._counters()
            dropped = loss_totals(cfg.counters, counters)
            if self.scan is None:
                return Status(components=cfg.counters, counters=counters, dropped=dropped,
                              dropped_total=sum(dropped.values()), not_ready_workers=not_ready)
            status = self.scan.status(cfg.counters, counters, dropped)
            if self.scan.reason == REDUCER_RESTARTED:
                status.counters["results_not_in_publish"] = not_in_publish(self.scan, cfg)
        status.not_ready_workers = not_ready
        return status

    def _counters(self) -> dict[str, int]:
        return {**self.counters, "lock_lost": self.lock.lost}

    def load(self, intervals: list[int], scan: bool = True) -> dict[str, WorkerLoad]:
        with self._lock:
            return self.scan.load(intervals, scan) if self.scan is not None else {}

    def sequence_json(self) -> dict[str, Any]:
        with self._lock:
            if self.scan is None:
                return {"parts": {}, "sequence": []}
            return self.scan.seq.to_sequence_json()

    def logs(self, level: str = "INFO") -> list[dict[str, str]]:
        """Entries of ``dfast:logs`` at or above ``level``."""
        return read_logs(self.redis, level)
