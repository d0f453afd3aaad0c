"""The replay's worker process: receive packed event batches, run the user's class, pack results.

``BatchWorker`` is the receive-and-unpack path of a worker process that a replay runs
(``replay --processes``); ``run_pool_worker`` is that process's entry point, and the control
messages below are what it exchanges with the replay's pool (``dranspose_fast.replay.pool``).
The networked worker is ``dranspose_fast.worker.service``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from typing import Any

import zmq

from dranspose_fast import _batch
from dranspose_fast.helpers.utils import import_class, parameters_hash
from dranspose_fast.protocol import WorkerName, WorkerState
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.tick import TickClock
from dranspose_fast.runtime.usercode import Parameters, WorkerHost, encode_payload

__all__: list[str] = []  # the replay pool's worker process: nothing here is the user's

logger = logging.getLogger(__name__)

# Control messages between a replay pool and its worker processes (one DEALER/ROUTER pair,
# so results, credits and the end of work arrive in the order they were sent); their
# layouts are ``dataplane``'s.
HELLO = dataplane.HELLO
PARAMETERS = dataplane.PARAMETERS
FINISH = dataplane.FINISH
CREDIT = dataplane.CREDIT
DONE = dataplane.DONE


class BatchWorker:
    """Turns event batches into ``process_event`` calls and result batches."""

    def __init__(self, host: WorkerHost) -> None:
        self.host = host
        self.parameters_hash: str | None = parameters_hash(host.parameters)
        self.bad_batches = 0

    def set_parameters(self, parameters: Parameters) -> None:
        self.host.parameters.clear()
        self.host.parameters.update(parameters)
        self.parameters_hash = parameters_hash(parameters)

    def handle(self, frames: Sequence[Any]) -> tuple[int, list[Any] | None]:
        """Process one event batch; returns (events processed, result frames or None)."""
        try:
            events = dataplane.decode_events(frames)
        except _batch.BatchFormatError as exc:
            self.bad_batches += 1
            logger.error("worker %s: dropped a malformed batch: %s", self.host.name, exc)
            return 0, None
        results = []
        process = self.host.process
        for evn, streams in events:
            result = process(_batch.make_event(evn, streams))
            if result is not None:
                results.append((evn, encode_payload(result)))
        if not results:
            return len(events), None
        return len(events), dataplane.encode_results(
            self.host.name, self.parameters_hash, results
        )


def run_pool_worker(
    wclass: str, name: str, url: str, parameters_blob: bytes, shared_tick: Any
) -> None:
    """Entry point of a ``replay --processes`` worker process."""
    logging.basicConfig(level=logging.WARNING)
    parameters: Parameters = pickle.loads(parameters_blob)
    host = WorkerHost(
        import_class(wclass), name, parameters, context={},
        state=WorkerState(name=WorkerName(name)), clock=TickClock(shared_tick),
    )
    worker = BatchWorker(host)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, name.encode())
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(url)
    sock.send_multipart(dataplane.encode_hello())
    try:
        while True:
            frames = sock.recv_multipart(copy=False)
            kind = frames[0].bytes
            if kind == dataplane.EVENTS:
                done, results = worker.handle(frames)
                if results is not None:
                    sock.send_multipart(results)
                sock.send_multipart(dataplane.encode_credit(done))
            elif kind == PARAMETERS:
                worker.set_parameters(pickle.loads(frames[1].bytes))
            elif kind == FINISH:
                host.finish()
                counters = dict(vars(host.counters), bad_batches=worker.bad_batches)
                sock.send_multipart(dataplane.encode_done(counters))
                break
    finally:
        sock.close()
        ctx.term()
