"""Prometheus metrics of every component, read from its own counters at scrape time.

Nothing here runs per event. The components already keep counters (the ones they publish in
their Redis config); a scrape reads them through a collector (``ComponentMetrics``) and turns
them into metric families, so the data path pays nothing for metrics except a few per-batch
additions: the bytes of each batch, the ingester's arrival stamp carried in each batch
(``dataplane``), the worker's busy time per loop pass (``DutyCycle``) and one latency
observation per result batch at the reducer (``LatencyHistogram``).

Each component has a private registry (several components may share a process, as in the
tests and ``dranspose-fast combined``). Workers and ingesters serve it on a port of their own
(``MetricsServer``, setting ``metrics_port``); the controller and the reducer serve it at
``/metrics`` of their HTTP app (``exposition``). docs/metrics.md lists every metric.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from dranspose_fast import __version__

logger = logging.getLogger(__name__)

#: Content type of ``exposition`` (the Prometheus text format).
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Counters that count lost data, by the start of their name: the same rule as the
#: controller's ``/api/v1/status`` (``controller.scan.LOSS_PREFIXES``; the runtime cannot
#: import a role, so the rule is repeated here and a test keeps the two equal).
LOSS_PREFIXES = ("dropped", "malformed", "undecodable")
#: The controller's counter of events held by workers that vanished: lost data too.
LOST_WITH_WORKERS = "events_lost_with_workers"
#: Upper bounds (seconds) of the latency buckets: 0.1 ms to 10 s, about 2.5 per decade.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Window of the duty-cycle gauge (seconds) and the spacing of its samples.
DUTY_WINDOW = 10.0
DUTY_SAMPLE = 1.0


@dataclass(frozen=True, slots=True)
class Spec:
    """How one published counter becomes a sample: family name, type, help, fixed labels."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    labels: tuple[tuple[str, str], ...] = ()


def _c(name: str, text: str, **labels: str) -> Spec:
    return Spec(name, "counter", text, tuple(labels.items()))


def _g(name: str, text: str, **labels: str) -> Spec:
    return Spec(name, "gauge", text, tuple(labels.items()))


_DISCARDED = "dranspose_ingester_frames_discarded_total"
_DISCARDED_HELP = "Upstream messages consumed on purpose and sent to no worker, by reason."

#: The ingester's counters (``IngesterCounters`` plus ``Ingester.metric_values``' gauges).
INGESTER: dict[str, Spec] = {
    "frames_received": _c("dranspose_ingester_frames_received_total",
                          "Upstream messages taken in: forwarded, discarded or dropped."),
    "forwarded": _c("dranspose_ingester_frames_forwarded_total",
                    "Upstream messages sent to at least one worker."),
    "discarded_by_map": _c(_DISCARDED, _DISCARDED_HELP, reason="map"),
    "discarded_outside_scan": _c(_DISCARDED, _DISCARDED_HELP, reason="outside_scan"),
    "events_routed": _c("dranspose_ingester_events_routed_total",
                        "Events (assigned rows with a frame of this ingester) routed."),
    "bad_assignments": _c("dranspose_ingester_bad_assignments_total",
                          "Assignment batches or cells that could not be used."),
    "bad_worker_messages": _c("dranspose_ingester_bad_worker_messages_total",
                              "Messages from workers that are not a hello."),
    "refused_worker_names": _c("dranspose_ingester_refused_worker_names_total",
                               "Hellos claiming a worker name another live peer holds."),
    "refused_peers": _c("dranspose_ingester_refused_peers_total",
                        "Handshakes refused by CURVE (no keys, wrong keys, key not allowed)."),
    "dumped": _c("dranspose_ingester_events_dumped_total", "Events written to the dump."),
    "dump_errors": _c("dranspose_ingester_dump_errors_total",
                      "Dumps that could not be opened, written or closed."),
    "source_errors": _c("dranspose_ingester_source_errors_total",
                        "Exceptions raised by user source code."),
    "queued_for_absent_workers": _g("dranspose_ingester_events_queued_for_absent_workers",
                                    "Events queued for workers that are not reachable."),
    "events_pending": _g("dranspose_ingester_events_pending",
                         "Events assigned to this ingester and not routed yet."),
    "frames_buffered": _g("dranspose_ingester_frames_buffered",
                          "Upstream messages read and not routed yet."),
    "connected_workers": _g("dranspose_ingester_connected_workers",
                            "Workers that said hello in the last four config intervals."),
    "retained_events": _g("dranspose_ingester_events_retained",
                          "Events sent and kept until released (processed and reduced)."),
    "retained_bytes": _g("dranspose_ingester_retained_bytes",
                         "Bytes of the event batches kept until released."),
    "released_events": _c("dranspose_ingester_events_released_total",
                          "Retained events released (processed and reduced)."),
    "resent_events": _c("dranspose_ingester_events_resent_total",
                        "Retained events resent to the worker that took over a lost one's."),
    "retention_blocked_seconds": _c("dranspose_ingester_retention_blocked_seconds_total",
                               "Time routing waited for releases with the retention full."),
}
#: What every upstream message the ingester took in became (their sum is ``frames_received``).
INGESTER_OUTCOMES = ("forwarded", "discarded_by_map", "discarded_outside_scan", "malformed",
                     "dropped_unknown_type")

#: The worker's published state (``WorkerServiceState``).
WORKER: dict[str, Spec] = {
    "processed_events": _c("dranspose_worker_events_processed_total",
                           "Events passed to process_event."),
    "results_sent": _c("dranspose_worker_results_total",
                       "Results sent to the reducer (process_event returned a value)."),
    "event_batches": _c("dranspose_worker_event_batches_total",
                        "Event batches received from the ingesters (not those dropped)."),
    "bytes_received": _c("dranspose_worker_received_bytes_total",
                         "Bytes of the event batches received (every frame)."),
    "result_messages": _c("dranspose_worker_result_batches_total",
                          "Result batches sent to the reducer."),
    "user_errors": _c("dranspose_worker_user_errors_total",
                      "Exceptions raised by process_event or finish."),
    "class_errors": _c("dranspose_worker_class_errors_total",
                       "Failures to load or construct the worker class."),
    "duplicate_streams": _c("dranspose_worker_duplicate_streams_total",
                            "Partial events that repeated a stream already received."),
    "bad_assignments": _c("dranspose_worker_bad_assignments_total",
                          "Assignment entries that could not be read."),
    "bad_configs": _c("dranspose_worker_bad_configs_total",
                      "Ingester or reducer configs that did not parse."),
    "batches_before_join": _c("dranspose_worker_batches_before_join_total",
                              "Batches for its name that came before this process joined a "
                              "running scan (its previous process's; rebound, not lost)."),
    "ingester_reconnects": _c("dranspose_worker_ingester_reconnects_total",
                              "Reconnections to ingesters (a new service uuid or url)."),
    "credit_failures": _c("dranspose_worker_credit_failures_total",
                          "Credit messages that could not be written to Redis (retried)."),
    "credits_granted": _c("dranspose_worker_credits_granted_total",
                          "Credits granted to the controller: the window, then every "
                          "processed event."),
    "busy_seconds": _c("dranspose_worker_busy_seconds_total",
                       "Time the data thread spent working (not waiting for messages)."),
    "duty_cycle": _g("dranspose_worker_duty_cycle",
                     f"Busy time / wall time of the data thread over the last "
                     f"{DUTY_WINDOW:.0f} s (0..1)."),
    "credits_ungranted": _g("dranspose_worker_credits_ungranted",
                            "Events processed and not yet granted back as credits."),
    "waiting_events": _g("dranspose_worker_events_waiting",
                         "Events assigned or partly received, not complete yet."),
    "results_queued": _g("dranspose_worker_result_batches_queued",
                         "Result batches waiting for the reducer to be reachable."),
}

#: The reducer's published state (``ReducerServiceState``).
REDUCER: dict[str, Spec] = {
    "results": _c("dranspose_reducer_results_total", "Results passed to process_result."),
    "result_messages": _c("dranspose_reducer_result_batches_total",
                          "Result batches received from the workers."),
    "received_bytes": _c("dranspose_reducer_received_bytes_total",
                         "Bytes of the result batches received."),
    "refused_peers": _c("dranspose_reducer_refused_peers_total",
                        "Handshakes refused by CURVE (no keys, wrong keys, key not allowed)."),
    "user_errors": _c("dranspose_reducer_user_errors_total",
                      "Exceptions raised by process_result or finish."),
    "timer_errors": _c("dranspose_reducer_timer_errors_total", "Exceptions raised by timer."),
    "class_errors": _c("dranspose_reducer_class_errors_total",
                       "Failures to load or construct the reducer class."),
    "duplicate_results": _c("dranspose_reducer_duplicate_results_total",
                            "Second results of one event of a lost worker (not reduced)."),
    "held_results": _g("dranspose_reducer_held_result_batches",
                       "Result batches of a scan not announced yet, held until it is."),
}

ROLES: dict[str, dict[str, Spec]] = {"ingester": INGESTER, "worker": WORKER, "reducer": REDUCER}


def is_loss(counter: str) -> bool:
    """Whether a counter counts lost data (``dranspose_dropped_total``)."""
    return counter.startswith(LOSS_PREFIXES) or counter == LOST_WITH_WORKERS


# === building families ===


class Families:
    """Metric families under construction, by name; every sample gets ``component``."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.found: dict[str, Metric] = {}

    def add(self, spec: Spec, value: float, **labels: str) -> None:
        names = ["component", *(k for k, _ in spec.labels), *labels]
        values = [self.component, *(v for _, v in spec.labels), *labels.values()]
        family = self.found.get(spec.name)
        if family is None:
            cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = self.found[spec.name] = cls(spec.name, spec.help, labels=names)
        family.add_metric(values, float(value))  # type: ignore[attr-defined]

    def drop(self, reason: str, value: float) -> None:
        self.add(_DROPPED, value, reason=reason)

    def info(self, role: str) -> None:
        self.add(_INFO, 1, role=role, version=__version__)

    def extend(self, metrics: Iterable[Metric]) -> None:
        for metric in metrics:
            self.found[metric.name] = metric

    def __iter__(self) -> Iterator[Metric]:
        return iter(self.found.values())


_DROPPED = _c("dranspose_dropped_total",
              "Lost data (frames, events, batches or results), by the counter that counts "
              "it: the counters /api/v1/status sums into dropped.")
_INFO = _g("dranspose_component_info", "Always 1: the component, its role and version.")
#: The reducer's latency histogram and the count of results whose latency came out negative.
LATENCY = Spec("dranspose_reducer_result_latency_seconds", "histogram",
               "Seconds from the ingester's arrival stamp of a result's event batch to the "
               "result reduced (wall clocks of two hosts: see docs/metrics.md, clock skew).")
_NEGATIVE = _c("dranspose_reducer_results_before_arrival_total",
               "Results reduced at a wall-clock time before their ingester's arrival stamp "
               "(clock skew between hosts); recorded in the latency histogram as 0.")


def role_families(role: str, component: str, values: Mapping[str, float]) -> Families:
    """The families of a component of ``role`` from its counters (``ROLES[role]``).

    Counters named like a loss (``is_loss``) go to ``dranspose_dropped_total`` with the
    counter's name as ``reason``; the others without a spec are not exported.
    """
    specs = ROLES[role]
    out = Families(component)
    out.info(role)
    if role == "ingester":
        values = {**values, "frames_received": sum(values.get(k, 0) for k in INGESTER_OUTCOMES)}
    for key, value in values.items():
        spec = specs.get(key)
        if spec is not None:
            out.add(spec, value)
        elif is_loss(key):
            out.drop(key, value)
    return out


#: Controller counters that are gauges (a number now, not a running total).
CONTROLLER_GAUGES = frozenset({"invalid_configs", "invalid_descriptions"})
_SCAN = {
    "finished": _g("dranspose_controller_scan_finished", "1 when the scan is over."),
    "open": _g("dranspose_controller_scan_open", "1 while the sequence is open (appendable)."),
    "last_assigned": _g("dranspose_controller_scan_events_assigned",
                        "Events of the scan assigned to workers so far."),
    "completed_events": _g("dranspose_controller_scan_events_completed",
                           "Events of the scan processed by every worker they went to."),
    "total_events": _g("dranspose_controller_scan_events_expected",
                       "Events of the scan's sequence (absent while it is open)."),
    "known_events": _g("dranspose_controller_scan_events_known",
                       "Events of the sequence known so far."),
    "batches": _g("dranspose_controller_scan_assignment_batches",
                  "Assignment batches written for the scan."),
}
_WORKER = {
    "credit": _g("dranspose_controller_worker_credits",
                 "Credits of the worker not yet used by the binding (this scan)."),
    "outstanding": _g("dranspose_controller_worker_events_outstanding",
                      "Events emitted to the worker and not yet processed (this scan)."),
    "pending": _g("dranspose_controller_worker_events_pending",
                  "Constraints bound to the worker whose events are not emitted yet."),
    "deliveries": _g("dranspose_controller_worker_deliveries",
                     "Events emitted to the worker (this scan)."),
    "processed": _g("dranspose_controller_worker_events_processed",
                    "Events the worker reported processed (this scan)."),
    "reduced": _g("dranspose_controller_worker_results_reduced",
                  "Results of the worker the reducer reported reduced (this scan)."),
}
_SCAN_INFO = _g("dranspose_controller_scan_info",
                "Always 1: the current scan's mapping uuid and how it ended.")
_COMPONENTS = _g("dranspose_controller_components",
                 "Live components (config key present in Redis), by role.")
_LOST = _g("dranspose_controller_workers_lost", "Workers lost during the current scan.")
_REDIS = _g("dranspose_controller_redis_up", "1 when the controller could read Redis.")


def controller_families(status: Mapping[str, Any] | None) -> Families:
    """The controller's families from ``/api/v1/status`` (``None``: Redis could not be read)."""
    out = Families("controller")
    out.info("controller")
    out.add(_REDIS, 0 if status is None else 1)
    if status is None:
        return out
    roles: dict[str, int] = {"ingester": 0, "worker": 0, "reducer": 0}
    for key in status.get("components", {}):
        role = key.split(":", 1)[0]
        roles[role] = roles.get(role, 0) + 1
    for role, n in sorted(roles.items()):
        out.add(_COMPONENTS, n, role=role)
    for key, value in sorted(status.get("counters", {}).items()):
        if is_loss(key):
            out.drop(key, value)
        elif key in CONTROLLER_GAUGES:
            out.add(_g(f"dranspose_controller_{key}", f"The controller's {key} (now)."), value)
        else:
            out.add(_c(f"dranspose_controller_{key}_total", f"The controller's {key}."), value)
    if status.get("mapping_uuid") is None:
        return out
    out.add(_SCAN_INFO, 1, mapping_uuid=str(status["mapping_uuid"]),
            reason=str(status.get("reason") or ""))
    for key, spec in _SCAN.items():
        value = status.get(key)
        if value is not None:
            out.add(spec, float(value))
    out.add(_LOST, len(status.get("lost_workers", {})))
    for worker, values in sorted(status.get("workers", {}).items()):
        for key, spec in _WORKER.items():
            out.add(spec, values.get(key, 0), worker=worker)
    return out


def exposition(families: Iterable[Metric]) -> bytes:
    """The Prometheus text format of ``families`` (served with ``CONTENT_TYPE``)."""
    return generate_latest(_Fixed(list(families)))


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


# === measuring ===


class LatencyHistogram:
    """Seconds from an ingester's arrival stamp to the result reduced, observed per batch.

    ``observe(seconds, count)`` adds ``count`` results of one batch at once (Prometheus
    histograms of ``prometheus_client`` take one observation at a time; a weight is what a
    per-batch record needs). A negative latency (the reducer's clock behind the ingester's)
    is counted in ``negative`` and recorded as 0.
    """

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.negative = 0

    def observe(self, seconds: float, count: int = 1) -> None:
        """Add ``count`` results of ``seconds`` (one writer thread; scrapes only read)."""
        if seconds < 0:
            self.negative += count
            seconds = 0.0
        self.counts[bisect_left(self.bounds, seconds)] += count  # first bound >= seconds: "le"
        self.total += seconds * count

    def families(self, component: str) -> list[Metric]:
        """The histogram ``LATENCY.name`` and the counter of negative latencies."""
        # Read without a lock: a scrape during an observation may see the batch in the
        # buckets and not yet in the sum, never a bucket count going back.
        counts, total, negative = list(self.counts), self.total, self.negative
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip([*map(repr, self.bounds), "+Inf"], counts, strict=True):
            running += n
            buckets.append((bound, running))
        histogram = HistogramMetricFamily(LATENCY.name, LATENCY.help, labels=["component"])
        histogram.add_metric([component], buckets, total)
        skewed = Families(component)
        skewed.add(_NEGATIVE, negative)
        return [histogram, *skewed]


class DutyCycle:
    """Busy time / wall time of a data thread: ``begin()`` and ``end()`` around each pass.

    The data thread only adds up its busy time; the readers (the config publisher every
    ``config_interval``, scrapes) keep a sample of the running total at most every
    ``DUTY_SAMPLE`` seconds, and ``ratio`` covers about the last ``window`` seconds from them.
    A pass still running counts up to now, so a long ``process_event`` shows as busy.
    """

    def __init__(self, window: float = DUTY_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.window = window
        self.busy = 0.0
        self.since = 0.0  # start of the running pass, 0 between passes
        self.samples: deque[tuple[float, float]] = deque(
            [(clock(), 0.0)], maxlen=int(window / DUTY_SAMPLE) + 2)

    def begin(self) -> None:
        self.since = self.clock()

    def end(self) -> None:
        self.busy += self.clock() - self.since
        self.since = 0.0

    def busy_seconds(self, now: float | None = None) -> float:
        """Busy time so far, the running pass included."""
        since, busy = self.since, self.busy
        now = self.clock() if now is None else now
        return busy + (now - since if since else 0.0)

    def ratio(self) -> float:
        """Busy time / wall time over about the last ``window`` seconds, 0..1."""
        now = self.clock()
        busy = self.busy_seconds(now)
        samples = list(self.samples)
        if now - samples[-1][0] >= DUTY_SAMPLE:
            self.samples.append((now, busy))
        t0, b0 = samples[0]
        for t, b in samples:  # the newest sample at least a window old, else the oldest
            if now - t < self.window:
                break
            t0, b0 = t, b
        wall = now - t0
        return min(1.0, max(0.0, (busy - b0) / wall)) if wall > 0 else 0.0


# === serving ===


class ComponentMetrics:
    """The registry of one component: its counters, read when it is scraped.

    Parameters
    ----------
    role : str
        ``"ingester"``, ``"worker"`` or ``"reducer"`` (the spec table, ``ROLES``).
    component : str
        The component's name: the ``component`` label of every sample.
    read : callable
        Returns the counters now (published names, ``ROLES[role]`` keys and losses).
    extra : callable, optional
        More families (the reducer's latency histogram).
    """

    def __init__(self, role: str, component: str, read: Callable[[], Mapping[str, float]],
                 extra: Callable[[], Iterable[Metric]] | None = None) -> None:
        self.role = role
        self.component = component
        self.read = read
        self.extra = extra
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Reader(self))

    def families(self) -> Families:
        out = role_families(self.role, self.component, self.read())
        if self.extra is not None:
            out.extend(self.extra())
        return out

    def text(self) -> bytes:
        """What ``GET /metrics`` answers."""
        return generate_latest(self.registry)


class _Reader(Collector):
    def __init__(self, owner: ComponentMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self.owner.families())
        except Exception:  # a scrape must never take the component down
            logger.exception("metrics of %s could not be read", self.owner.component)
            return []


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape is noise


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsServer:
    """``/metrics`` of a component without an HTTP app (workers, ingesters), in a thread.

    ``start()`` binds ``host:port`` (an ``OSError`` naming them when it cannot; nothing when
    ``port`` is ``None`` or 0: no metrics port); ``stop()`` closes it within a poll interval
    (50 ms).
    """

    def __init__(self, metrics: ComponentMetrics, host: str, port: int | None) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        if not self.port or self._server is not None:
            return self
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsHTTPServer", (_Server,), {"address_family": family})
        try:
            app = make_wsgi_app(self.metrics.registry)
            server: WSGIServer = make_server(self.host, self.port, app, server_class,
                                             handler_class=_Quiet)
        except OSError as exc:
            raise OSError(f"{self.metrics.component}: cannot serve metrics on "
                          f"{self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = server.server_port
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"{self.metrics.component}-metrics", daemon=True)
        self._thread.start()
        logger.info("%s: metrics on %s", self.metrics.component, self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def numbers(state: Any) -> dict[str, float]:
    """The numeric fields of a published state model (its counters and gauges)."""
    out: dict[str, float] = {}
    for key in type(state).model_fields:
        value = getattr(state, key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    return out
