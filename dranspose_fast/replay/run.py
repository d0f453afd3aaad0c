"""Replay: run worker and reducer classes on recorded streams, without Redis or a network.

This is 0.2's ``dranspose replay``, the way to run classes without a cluster.  Differences
from dranspose 0.2, on purpose:

* streams of several files are merged by event number and a file that ends early does **not**
  end the replay: the other files play on;
* with ``map_file`` the events are bound to workers by the same engine as the live controller,
  so stateful workers see the same events they would see at the beamline;
* user exceptions are logged and counted (``ReplayReport``) instead of ending the replay;
* results are read back as data only, as the live reducer reads them (``read_result``):
  a result class must be named in ``DFAST_RESULT_CLASSES``, else the result is refused and
  counted as a reducer error.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import Url

from dranspose_fast import __version__
from dranspose_fast.errors import DumpError
from dranspose_fast.event import (
    EventData,
    InternalWorkerMessage,
    StreamData,
    make_event_data,
)
from dranspose_fast.helpers.safe_pickle import AllowList
from dranspose_fast.helpers.utils import import_class, parameters_hash
from dranspose_fast.parameters import load_parameter_file
from dranspose_fast.protocol import ReducerState, WorkerName, WorkerState, WorkParameter
from dranspose_fast.replay.dispatch import Dispatcher, MapDispatcher, SpreadDispatcher
from dranspose_fast.replay.pacing import Pacing, Progress, progress_bar
from dranspose_fast.replay.report import ReplayReport
from dranspose_fast.replay.results import REFUSED, read_result
from dranspose_fast.runtime.settings import ResultSettings
from dranspose_fast.runtime.tick import TickClock
from dranspose_fast.runtime.usercode import (
    Parameters,
    ReducerHost,
    WorkerHost,
    apply_descriptions,
    describe,
    encode_payload,
)

logger = logging.getLogger(__name__)

Streams = dict[str, StreamData]

#: Validates a list of ``{"name", "data"}`` parameter records (0.2's name).
ParamList: TypeAdapter[list[WorkParameter]] = TypeAdapter(list[WorkParameter])


# === Inputs ===


def get_internals(filename: str | os.PathLike[str]) -> Iterator[InternalWorkerMessage]:
    """The records of one dump file, in file order (0.2's name; see ``dump.read_dump``).

    Raises
    ------
    FileNotFoundError
        if the file does not exist.
    DumpError
        for a truncated or malformed record, after every complete record before it.
    """
    from dranspose_fast.dump import read_dump

    return read_dump(filename)


def open_inputs(
    files: Iterable[str | os.PathLike[str]] | None, source: str | None
) -> list[Iterator[Any]]:
    """One generator of ``InternalWorkerMessage`` per dump file, or the source class's."""
    if source is not None:
        instance = import_class(source)()
        return [iter(g) for g in instance.get_source_generators()]
    from dranspose_fast.dump import read_dump

    paths = [os.fspath(f) for f in files or []]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"dump file {path!r} does not exist")
    return [read_dump(p) for p in paths]


def merge_by_event(
    inputs: list[Iterator[Any]], names: list[str], errors: list[str] | None = None
) -> Iterator[tuple[int, Streams]]:
    """Merge partial events of several inputs by event number, lowest first.

    An input that ends is dropped from the merge; the others go on.  An input that fails
    (a truncated dump) has yielded every complete record; its error is logged, appended to
    ``errors`` and the others go on.
    """
    if len(inputs) == 1:  # nothing to merge: no heap on the per-event path
        yield from _single(inputs[0], names[0] if names else "input 0", errors)
        return
    heap: list[tuple[int, int, Any]] = []
    for i in range(len(inputs)):
        _advance(heap, inputs, i, names, errors)
    while heap:
        evn, i, msg = heapq.heappop(heap)
        streams: Streams = dict(msg.streams)
        _advance(heap, inputs, i, names, errors)
        while heap and heap[0][0] == evn:
            _, j, other = heapq.heappop(heap)
            for name, data in other.streams.items():
                if name in streams:
                    logger.warning(
                        "event %d: stream %r appears in two inputs; keeping the first", evn, name
                    )
                else:
                    streams[name] = data
            _advance(heap, inputs, j, names, errors)
        yield evn, streams


def _single(
    messages: Iterator[Any], name: str, errors: list[str] | None
) -> Iterator[tuple[int, Streams]]:
    try:
        for msg in messages:
            yield msg.event_number, msg.streams
    except (DumpError, OSError, EOFError) as exc:
        logger.error("input %s: %s", name, exc)
        if errors is not None:
            errors.append(str(exc))


def _advance(
    heap: list[tuple[int, int, Any]],
    inputs: list[Iterator[Any]],
    i: int,
    names: list[str],
    errors: list[str] | None,
) -> None:
    name = names[i] if i < len(names) else f"input {i}"
    try:
        msg = next(inputs[i], None)
    except (DumpError, OSError, EOFError) as exc:
        logger.error("input %s: %s", name, exc)
        if errors is not None:
            errors.append(str(exc))
        return
    if msg is None:
        logger.info("input %s ended", name)
    else:
        heapq.heappush(heap, (msg.event_number, i, msg))


# === Parameters ===


def get_parameters(
    parameter_file: str | os.PathLike[str] | None, workercls: type, reducercls: type
) -> Parameters:
    """File values parsed through the classes' descriptions, defaults for the rest."""
    loaded = load_parameter_file(parameter_file) if parameter_file is not None else {}
    return apply_descriptions(loaded, describe(workercls, reducercls))


# === The replay ===


def replay(
    wclass: str,
    rclass: str,
    zmq_files: list[str | os.PathLike[str]] | None = None,
    source: str | None = None,
    parameter_file: str | os.PathLike[str] | None = None,
    port: int | None = None,
    stop_event: threading.Event | None = None,
    nworkers: int = 2,
    broadcast_first: bool = True,
    done_event: threading.Event | None = None,
    start_event: threading.Event | None = None,
    latency: float | None = None,
    *,
    map_file: str | os.PathLike[str] | None = None,
    rate: float | None = None,
    out: str | os.PathLike[str] | None = None,
    processes: bool = False,
    progress: bool | None = None,
    seed: int | None = None,
    host: str = "127.0.0.1",
    on_server: Callable[[str], None] | None = None,
) -> ReplayReport:
    """Replay dumps (or a source class) through ``nworkers`` workers and one reducer.

    The positional parameters are dranspose 0.2's.  ``port`` serves ``publish`` over the
    HDF5-REST API and accepts parameter POSTs; ``stop_event`` keeps that server up after the
    end until it is set (``--keep-alive``).  ``rate`` plays at that many events per second,
    ``out`` writes ``publish`` to HDF5, ``processes`` runs the workers in separate processes.
    ``port=0`` serves on a free port; ``on_server`` is called with the URL once it serves.
    """
    workercls = import_class(wclass)
    reducercls = import_class(rclass)
    from dranspose_fast.runtime import dataplane  # not for reading dumps: see results.py

    allowed = dataplane.result_classes(ResultSettings().result_classes)
    parameters = get_parameters(parameter_file, workercls, reducercls)
    inputs = open_inputs(zmq_files, source)
    names = [os.fspath(f) for f in zmq_files or []] or [f"source {source}"]
    worker_names = [f"replay-worker-{i}" for i in range(nworkers)]
    dispatcher: Dispatcher = (
        MapDispatcher(map_file, worker_names) if map_file is not None
        else SpreadDispatcher(len(worker_names), broadcast_first, random.Random(seed))
    )

    reducer = ReducerHost(
        reducercls, parameters, context={},
        state=ReducerState(url=Url("tcp://localhost:10200"), dranspose_version=__version__),
    )
    server = None
    if port is not None:
        from dranspose_fast.replay.app import ReplayServer

        server = ReplayServer(reducer, describe(workercls, reducercls), host, port)
        server.start()
        if on_server is not None:
            on_server(server.url)
    reducer.start_timer()
    report = ReplayReport()
    try:
        if start_event is not None:
            start_event.wait()
        events = merge_by_event(inputs, names, report.input_errors)
        if processes:
            from dranspose_fast.replay.pool import run_pool

            run_pool(wclass, worker_names, parameters, events, dispatcher, reducer, report,
                     pacing=Pacing(rate, latency), progress=progress_bar(progress),
                     allowed=allowed)
        else:
            clock = TickClock()  # one tick per interval across all workers, as live
            workers = [
                WorkerHost(workercls, name, parameters, context={},
                           state=WorkerState(name=WorkerName(name)), clock=clock)
                for name in worker_names
            ]
            _run_in_process(workers, events, dispatcher, reducer, report,
                            Pacing(rate, latency), progress_bar(progress), allowed)
            for worker in workers:
                worker.finish()
                report.worker_errors += worker.counters.errors
        reducer.finish()
        report.reducer_errors = reducer.counters.errors
        report.results = reducer.counters.results
        report.unmapped_events = dispatcher.unmapped
        if out is not None:
            write_result(reducer, out, parameters)
        if done_event is not None:
            done_event.set()
        if server is not None and stop_event is not None:
            try:
                stop_event.wait()
            except KeyboardInterrupt:
                pass
    finally:
        reducer.stop_timer()
        if server is not None:
            server.stop()
    return report


def _run_in_process(
    workers: list[WorkerHost],
    events: Iterator[tuple[int, Streams]],
    dispatcher: Dispatcher,
    reducer: ReducerHost,
    report: ReplayReport,
    pacing: Pacing,
    progress: Progress,
    allowed: AllowList,
) -> None:
    started = time.perf_counter()
    per_worker = [0] * len(workers)
    deliveries = 0
    nevents = 0
    reduce = reducer.process
    route = dispatcher.route
    phash = parameters_hash(reducer.parameters)
    version = reducer.parameters_version
    try:
        for evn, streams in events:
            if pacing.active:
                pacing.wait(nevents)
            nevents += 1
            if reducer.parameters_version != version:  # a parameter was POSTed over HTTP
                version = reducer.parameters_version
                phash = parameters_hash(reducer.parameters)
            for wi, part in route(evn, streams):
                worker = workers[wi]
                per_worker[wi] += 1
                deliveries += 1
                event: EventData = make_event_data(evn, part)
                result = worker.process(event)
                if result is not None:
                    # Same serialization as on the network: the reducer gets a copy.
                    value = read_result(encode_payload(result), allowed, reducer, worker.name,
                                        evn)
                    if value is not REFUSED:
                        reduce(evn, worker.name, phash, value)
            progress.add(1)
    finally:
        progress.close()
        report.seconds = time.perf_counter() - started
        report.events = nevents
        report.deliveries = deliveries
        report.per_worker = {w.name: n for w, n in zip(workers, per_worker, strict=True)}


def write_result(
    reducer: ReducerHost, out: str | os.PathLike[str], parameters: Parameters
) -> None:
    """Write ``publish`` to HDF5 with the parameters and the package version as attributes."""
    from dranspose_fast.helpers.h5dump import dump

    data, lock = reducer.get_data()
    attrs: dict[str, Any] = {"dranspose_fast_version": __version__}
    for name, param in parameters.items():
        attrs[f"parameter_{name}"] = param.data
    dump(data, os.fspath(out), lock=lock, attrs=attrs)
