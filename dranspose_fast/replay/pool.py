"""``replay --processes``: the replay's workers in separate processes, still without Redis.

The replay process plays the ingester and the reducer: it packs each worker's events into
batches (``dataplane.encode_events``), sends them over a loopback ROUTER socket, and folds the
result batches that come back.  Workers run ``dranspose_fast.worker.run_pool_worker``, which
unpacks the batches with the same ``dataplane`` decoder as a distributed worker.  Flow control
is by credits: a worker never holds more than ``CREDITS`` unprocessed events.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import time
from collections.abc import Iterator
from typing import Any

import zmq

from dranspose_fast.errors import ServiceError
from dranspose_fast.helpers.safe_pickle import PLAIN_DATA, AllowList
from dranspose_fast.protocol import HashDigest
from dranspose_fast.replay.dispatch import Dispatcher, Streams
from dranspose_fast.replay.pacing import Pacing, Progress
from dranspose_fast.replay.report import ReplayReport
from dranspose_fast.replay.results import REFUSED, read_result
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.tick import new_shared_tick
from dranspose_fast.runtime.usercode import Parameters, ReducerHost

logger = logging.getLogger(__name__)

#: Events a worker may hold unprocessed; enough to hide the loopback round trip.
CREDITS = 512
#: Events packed into one batch at most (a batch is flushed earlier when the input pauses).
BATCH_EVENTS = 64
#: How long to wait for worker processes to start (spawn + imports of the user's code).
START_TIMEOUT = 60.0


class PoolError(ServiceError):
    """A worker process died or did not start; the message names it."""


def run_pool(
    wclass: str,
    worker_names: list[str],
    parameters: Parameters,
    events: Iterator[tuple[int, Streams]],
    dispatcher: Dispatcher,
    reducer: ReducerHost,
    report: ReplayReport,
    pacing: Pacing,
    progress: Progress,
    allowed: AllowList = PLAIN_DATA,
) -> None:
    pool = _Pool(wclass, worker_names, parameters, reducer)
    pool.allowed = allowed
    started = time.perf_counter()
    try:
        pool.start()
        nevents = 0
        version = reducer.parameters_version
        for evn, streams in events:
            if pacing.active:
                pool.flush_all()
                pacing.wait(nevents)
            nevents += 1
            if reducer.parameters_version != version:
                version = reducer.parameters_version
                pool.flush_all()
                pool.broadcast_parameters()
            for wi, part in dispatcher.route(evn, streams):
                pool.add(wi, evn, part)
            progress.add(1)
            pool.poll(0)
        pool.flush_all()
        pool.finish()
        report.events = nevents
    finally:
        progress.close()
        pool.close()
        report.seconds = time.perf_counter() - started
    report.deliveries = sum(pool.sent)
    report.per_worker = dict(zip(worker_names, pool.sent, strict=True))
    report.worker_errors += sum(int(c.get("errors", 0)) for c in pool.counters.values())


class _Pool:
    def __init__(
        self, wclass: str, names: list[str], parameters: Parameters, reducer: ReducerHost
    ) -> None:
        self.names = names
        self.ids = {n.encode(): i for i, n in enumerate(names)}
        self.reducer = reducer
        #: What results may hold (``DFAST_RESULT_CLASSES``), as the live reducer reads them.
        self.allowed = PLAIN_DATA
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        url = f"tcp://127.0.0.1:{port}"
        blob = pickle.dumps(parameters)
        self.tick = tick = new_shared_tick()  # kept alive until the children unpickled it
        spawn = multiprocessing.get_context("spawn")
        from dranspose_fast.worker import run_pool_worker

        self.procs = [
            spawn.Process(target=run_pool_worker, args=(wclass, n, url, blob, tick),
                          name=n, daemon=True)
            for n in names
        ]
        self.credits = [CREDITS] * len(names)
        self.pending: list[list[tuple[int, Streams]]] = [[] for _ in names]
        self.sent = [0] * len(names)
        self.counters: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        for p in self.procs:
            p.start()
        ready: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT
        while len(ready) < len(self.procs):
            self._check_alive()
            if time.monotonic() > deadline:
                raise PoolError(f"worker processes did not start within {START_TIMEOUT:.0f} s")
            if self.sock.poll(100):
                ident, kind, *_ = self.sock.recv_multipart()
                if kind == dataplane.HELLO:
                    ready.add(self.ids[ident])

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.exitcode is not None and p.name not in self.counters:
                raise PoolError(f"worker process {p.name} exited with code {p.exitcode}")

    def add(self, wi: int, evn: int, streams: Streams) -> None:
        pending = self.pending[wi]
        pending.append((evn, streams))
        if len(pending) >= BATCH_EVENTS:
            self.flush(wi)

    def flush(self, wi: int) -> None:
        pending = self.pending[wi]
        if not pending:
            return
        while self.credits[wi] < len(pending):
            self.poll(100)
        self.credits[wi] -= len(pending)
        self.sent[wi] += len(pending)
        frames = dataplane.encode_events(pending)
        self.sock.send_multipart([self.names[wi].encode(), *frames], copy=False)
        self.pending[wi] = []

    def flush_all(self) -> None:
        for wi in range(len(self.names)):
            self.flush(wi)

    def broadcast_parameters(self) -> None:
        blob = pickle.dumps(self.reducer.parameters)
        for name in self.names:
            self.sock.send_multipart([name.encode(), *dataplane.encode_parameters(blob)])

    def poll(self, timeout_ms: int) -> None:
        """Take in everything the workers sent (results, credits, ends of work)."""
        if not self.sock.poll(timeout_ms):
            self._check_alive()
            return
        while True:
            try:
                ident, *frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            wi = self.ids[ident.bytes]
            kind = frames[0].bytes
            if kind == dataplane.RESULTS:
                worker, phash, results = dataplane.decode_results(frames)
                for evn, payload in results:
                    value = read_result(payload, self.allowed, self.reducer, worker, evn)
                    if value is not REFUSED:
                        self.reducer.process(evn, worker, HashDigest(phash) if phash else None,
                                            value)
            elif kind == dataplane.CREDIT:
                self.credits[wi] += dataplane.decode_credit(frames)
            elif kind == dataplane.DONE:
                self.counters[self.names[wi]] = dataplane.decode_done(frames)

    def finish(self) -> None:
        for name in self.names:
            self.sock.send_multipart([name.encode(), dataplane.FINISH])
        while len(self.counters) < len(self.names):
            self.poll(100)

    def close(self) -> None:
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self.sock.close(linger=0)
        self.ctx.term()
