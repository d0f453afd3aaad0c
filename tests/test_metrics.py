"""Prometheus metrics (issue 12, item 4): every component's ``/metrics`` on real parts.

* the pieces: the latency histogram (weighted per batch), the duty cycle (an injected clock),
  the arrival stamp in the data plane's messages, the loss rule shared with the controller,
  and that every published counter is exported;
* every component answers ``/metrics`` with no scan running, in one process;
* ``dranspose-fast local`` runs a scan while the test scrapes every component, in the middle of
  the scan and after it, and checks the counters against the scan's known numbers.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dranspose_fast.controller import Controller
from dranspose_fast.controller import scan as controller_scan
from dranspose_fast.controller.routes import create_app as controller_app
from dranspose_fast.event import StreamData
from dranspose_fast.ingester import IngesterCounters
from dranspose_fast.ingesters.zmqpull_single import ZmqPullSingleIngester, ZmqPullSingleSettings
from dranspose_fast.reducer import Reducer
from dranspose_fast.reducer import create_app as reducer_app
from dranspose_fast.reducer.service import ReducerServiceState
from dranspose_fast.runtime import dataplane, metrics
from dranspose_fast.runtime.settings import ReducerSettings, WorkerSettings
from dranspose_fast.worker import Worker
from dranspose_fast.worker.parts import WorkerServiceState
from tests.conftest import free_port, wait_for
from tests.controller_sim import ctrl, settings  # noqa: F401 (fixtures)
from tests.ensemble import ROOT, uniform
from tests.stins_source import StinsSource

Families = dict[str, Any]


def parse(text: str) -> Families:
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape(url: str) -> Families:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


def value(families: Families, name: str, **labels: str) -> float:
    """The one sample of ``name`` (a sample name: ``..._total``, ``..._count``) with ``labels``."""
    family = name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    found = [s.value for s in families[family].samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, families[family].samples)
    return float(found[0])


def check_conventions(families: Families) -> None:
    """Names follow Prometheus' conventions: prefix, ``_total`` counters, base units."""
    for name, family in families.items():
        assert name.startswith("dranspose_"), name
        assert not re.search(r"_(ms|milliseconds|kb|mb|kib|mib|percent)(_|$)", name), name
        for sample in family.samples:
            assert "component" in sample.labels, sample
            if family.type == "counter":
                assert sample.name.endswith("_total") and not name.endswith("_total"), sample
            elif family.type == "gauge":
                assert not sample.name.endswith("_total"), sample
            elif family.type == "histogram":
                assert name.endswith("_seconds"), name
        if "bytes" in name:  # a total or a level (e.g. the retention window), in bytes
            assert name.endswith("_bytes"), name


# === the pieces ===


@examples(deadline=None, max_examples=100)
@given(st.lists(st.tuples(st.floats(-1.0, 20.0, allow_nan=False), st.integers(1, 50)),
                max_size=30))
def test_latency_histogram_counts_every_result_of_a_batch(
        observations: list[tuple[float, int]]) -> None:
    histogram = metrics.LatencyHistogram()
    for seconds, count in observations:
        histogram.observe(seconds, count)
    family, negative = histogram.families("reducer")
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    for bound in metrics.LATENCY_BUCKETS:
        want = sum(n for t, n in observations if max(t, 0.0) <= bound)
        assert buckets[repr(bound)] == want
    total = sum(n for _t, n in observations)
    assert buckets["+Inf"] == total
    counts = [s.value for s in family.samples if s.name.endswith("_count")]
    assert counts == [total]
    sums = [s.value for s in family.samples if s.name.endswith("_sum")]
    assert sums[0] == pytest.approx(sum(max(t, 0.0) * n for t, n in observations))
    assert negative.samples[0].value == sum(n for t, n in observations if t < 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_duty_cycle_is_busy_time_over_wall_time_of_the_recent_window() -> None:
    clock = FakeClock()
    duty = metrics.DutyCycle(window=10.0, clock=clock)
    for _ in range(20):  # 20 s: 0.25 s busy in every second; a reader once a second
        duty.begin()
        clock.now += 0.25
        duty.end()
        clock.now += 0.75
        duty.ratio()
    assert duty.busy_seconds() == pytest.approx(5.0)
    assert duty.ratio() == pytest.approx(0.25, abs=0.03)
    for _ in range(12):  # then fully busy for 12 s: the window forgets the quarter
        duty.begin()
        clock.now += 1.0
        duty.end()
        duty.ratio()
    assert duty.ratio() == pytest.approx(1.0, abs=0.03)
    duty.begin()  # a pass that runs long counts while it runs
    clock.now += 30.0
    assert duty.ratio() == 1.0
    assert duty.busy_seconds() == pytest.approx(5.0 + 12.0 + 30.0)
    duty.end()
    clock.now += 40.0  # idle
    assert 0.0 <= duty.ratio() < 0.5


def test_batches_carry_the_ingesters_arrival_stamp() -> None:
    before = time.time()
    frames = dataplane.encode_events([(3, {"s": StreamData(typ="STINS", frames=[b"x"])})])
    after = time.time()
    arrival, events = dataplane.decode_event_batch(frames)
    assert before <= arrival <= after
    assert [evn for evn, _ in events] == [3]
    assert dataplane.message_bytes(frames) == sum(len(f) for f in frames)
    for stamp, want in [(12.5, 12.5), (None, None), (math.inf, None)]:
        results = dataplane.encode_results("w", "h", [(3, b"r")], arrival=stamp)
        assert dataplane.decode_result_batch(results)[2] == want
        assert dataplane.decode_results(results)[0] == "w"


def test_the_loss_rule_is_the_controllers() -> None:
    assert metrics.LOSS_PREFIXES == controller_scan.LOSS_PREFIXES
    assert metrics.LOST_WITH_WORKERS == controller_scan.LOST_WITH_WORKERS


def _numeric(model: Any) -> set[str]:
    return {k for k, f in model.model_fields.items() if f.annotation in (int, float)}


@pytest.mark.parametrize(("role", "fields", "skipped"), [
    ("ingester", set(IngesterCounters().as_dict()) | {"events_pending", "frames_buffered",
                                                      "connected_workers"}, set()),
    ("worker", _numeric(WorkerServiceState), {"event_rate"}),
    # processed_events is the reducer's results again (0.2's field)
    ("reducer", _numeric(ReducerServiceState), {"event_rate", "processed_events"}),
])
def test_every_published_counter_is_exported(role: str, fields: set[str],
                                             skipped: set[str]) -> None:
    specs = metrics.ROLES[role]
    missing = {k for k in fields - skipped if k not in specs and not metrics.is_loss(k)}
    assert not missing
    assert not set(specs) - fields - {"frames_received"}  # no spec for a counter that is gone
    families = parse(metrics.exposition(
        metrics.role_families(role, "c", dict.fromkeys(fields, 3))).decode())
    check_conventions(families)
    losses = {k for k in fields if metrics.is_loss(k)}
    got = {s.labels["reason"] for s in families["dranspose_dropped"].samples} if losses else set()
    assert got == losses


def test_the_docs_name_every_metric() -> None:
    status = {"components": {"worker:w": {}}, "counters": dict.fromkeys(
                  [*metrics.CONTROLLER_GAUGES, metrics.LOST_WITH_WORKERS], 0),
              "mapping_uuid": "u", "reason": None, "finished": False, "open": False,
              "last_assigned": 1, "completed_events": 1, "total_events": 2, "known_events": 2,
              "batches": 1, "lost_workers": {}, "workers": {"w": {}}}
    found = [*metrics.controller_families(status), *metrics.LatencyHistogram().families("r")]
    for role, specs in metrics.ROLES.items():
        found += metrics.role_families(role, "c", dict.fromkeys(specs, 0))
    doc = (ROOT / "docs" / "metrics.md").read_text()
    names = {f.name + "_total" if f.type == "counter" else f.name for f in found}
    assert len(names) > 60
    assert not {n for n in names if f"`{n}`" not in doc}


# === every component answers with no scan running ===


@pytest.fixture
def reducer(redis_url: str) -> Iterator[Reducer]:
    r = Reducer(ReducerSettings(redis_url=redis_url, reducer_url=f"tcp://127.0.0.1:{free_port()}",
                                build_meta_file=None, dfast_config_interval=0.2))
    r.start()
    yield r
    r.close()


def test_every_component_answers_with_no_scan(redis_url: str, ctrl: Controller,
                                              reducer: Reducer) -> None:
    common: dict[str, Any] = {"redis_url": redis_url, "build_meta_file": None,
                              "dfast_config_interval": 0.2}
    worker = Worker(WorkerSettings(worker_name="w-idle", dfast_metrics_port=free_port(),
                                   **common))
    ingester = ZmqPullSingleIngester(ZmqPullSingleSettings(
        ingester_streams=["eiger"], upstream_url=f"tcp://127.0.0.1:{free_port()}",
        ingester_url=f"tcp://127.0.0.1:{free_port()}", dfast_metrics_port=free_port(),
        **common))
    worker.start()
    ingester.start()
    try:
        found = {"w-idle": scrape(worker.metrics_server.url),
                 "eiger-ingester": scrape(ingester.metrics_server.url)}
        with TestClient(reducer_app(reducer)) as client:
            found["reducer"] = parse(client.get("/metrics").text)
        with TestClient(controller_app(ctrl)) as client:
            found["controller"] = parse(client.get("/metrics").text)
    finally:
        worker.close()
        ingester.close()
    for component, families in found.items():
        check_conventions(families)
        info = families["dranspose_component_info"].samples[0]
        assert info.labels["component"] == component
    assert value(found["w-idle"], "dranspose_worker_events_processed_total") == 0
    assert value(found["eiger-ingester"], "dranspose_ingester_frames_received_total") == 0
    assert value(found["reducer"], "dranspose_reducer_result_latency_seconds_count") == 0
    assert value(found["controller"], "dranspose_controller_redis_up") == 1
    assert "dranspose_controller_scan_info" not in found["controller"]
    with pytest.raises(httpx.TransportError):  # the metrics server stops with its component
        httpx.get(worker.metrics_server.url, timeout=2)


def test_a_metrics_port_in_use_is_an_error_naming_it(redis_url: str) -> None:
    with StinsSource(free_port()) as taken:  # any bound TCP port
        port = int(taken.url.rsplit(":", 1)[1])
        worker = Worker(WorkerSettings(redis_url=redis_url, worker_name="w-port",
                                       build_meta_file=None, dfast_metrics_port=port))
        try:
            with pytest.raises(OSError, match=f"w-port: cannot serve metrics on .*:{port}"):
                worker.start()
        finally:
            worker.close()


# === a scan through `dranspose-fast local`, scraped while it runs ===


class Local:
    """``dranspose-fast local`` on one STINS stream; the metrics addresses it prints."""

    def __init__(self, tmp: Path, redis_url: str, source: StinsSource) -> None:
        self.port, self.reducer_port = free_port(), free_port()
        self.log = tmp / "local.log"
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT),
               "DFAST_CONFIG_TTL": "2", "DFAST_CONFIG_INTERVAL": "0.2",
               "BUILD_META_FILE": str(tmp / "none.json")}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dranspose_fast.cli", "local",
                 "--stream", f"eiger={source.url}", "--nworkers", "2",
                 "-w", "tests.e2e_classes:RecordWorker", "-r", "tests.e2e_classes:RecordReducer",
                 "--port", str(self.port), "--reducer-port", str(self.reducer_port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.controller = f"http://127.0.0.1:{self.port}"
        self.urls: dict[str, str] = wait_for(self._printed, 60, "the metrics addresses")

    def _printed(self) -> dict[str, str]:
        assert self.proc.poll() is None, self.text()
        found = dict(re.findall(r"^metrics of (\S+): (\S+)$", self.text(), re.M))
        return found if len(found) == 5 else {}

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def scrape_all(self) -> dict[str, Families]:
        return {name: scrape(url) for name, url in self.urls.items()}

    def wait(self, what: str, check: Any, timeout: float = 60.0) -> Any:
        def attempt() -> Any:
            assert self.proc.poll() is None, self.text()[-5000:]
            try:
                return check()
            except (httpx.HTTPError, KeyError, AssertionError):
                return None
        try:
            return wait_for(attempt, timeout, what)
        except AssertionError:
            raise AssertionError(f"{what}\n{self.text()[-5000:]}") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def totals(found: dict[str, Families], name: str, role: str) -> float:
    return sum(value(f, name) for n, f in found.items() if n.startswith(role))


def counts(found: dict[str, Families]) -> dict[str, float]:
    """The counters the test knows the scan's numbers of."""
    ing = found["eiger-ingester"]
    return {
        "frames_received": value(ing, "dranspose_ingester_frames_received_total"),
        "frames_forwarded": value(ing, "dranspose_ingester_frames_forwarded_total"),
        "events_routed": value(ing, "dranspose_ingester_events_routed_total"),
        "processed": totals(found, "dranspose_worker_events_processed_total", "worker-"),
        "results": totals(found, "dranspose_worker_results_total", "worker-"),
        "reduced": value(found["reducer"], "dranspose_reducer_results_total"),
        "latency_count": value(found["reducer"],
                               "dranspose_reducer_result_latency_seconds_count"),
    }


def test_local_scan_counters_match_the_scans_numbers(redis_url: str, tmp_path: Path) -> None:
    with StinsSource(free_port(), shape=(16, 16), n=10) as source:
        local = Local(tmp_path, redis_url, source)
        try:
            assert set(local.urls) == {"controller", "reducer", "worker-0", "worker-1",
                                       "eiger-ingester"}
            local.wait("every component", lambda: len(
                httpx.get(f"{local.controller}/api/v1/config").json()["workers"]) == 2
                and httpx.get(f"{local.controller}/api/v1/streams").json() == ["eiger"])
            answer = httpx.post(f"{local.controller}/api/v1/sequence",
                                json=uniform(["eiger"], 10), timeout=30)
            assert answer.status_code == 200, answer.text
            # Half the series: event 0 (the header, to both workers) and images 0..4.
            source.send_header()
            for i in range(5):
                source.send_image(i)
            middle = local.wait("the first half reduced", lambda: (
                found if counts(found := local.scrape_all())["reduced"] == 7 else None))
            assert counts(middle) == {"frames_received": 6, "frames_forwarded": 6,
                                      "events_routed": 6, "processed": 7, "results": 7,
                                      "reduced": 7, "latency_count": 7}
            ctrl = local.wait("the controller's view of it", lambda: (
                found if value(found := scrape(local.urls["controller"]),
                               "dranspose_controller_scan_events_completed") == 6 else None))
            assert value(ctrl, "dranspose_controller_scan_finished") == 0
            assert value(ctrl, "dranspose_controller_scan_events_expected") == 12
            for families in middle.values():
                check_conventions(families)
            for i in range(5, 10):
                source.send_image(i)
            source.send_end()
            local.wait("the scan to finish", lambda: httpx.get(
                f"{local.controller}/api/v1/progress").json()["finished"])
            end = local.wait("every result reduced", lambda: (
                found if counts(found := local.scrape_all())["reduced"] == 14 else None))
        finally:
            code = local.stop()
    assert code == 0, local.text()[-5000:]
    # 12 events (header, 10 images, end); header and end go to both workers: 14 results.
    assert counts(end) == {"frames_received": 12, "frames_forwarded": 12, "events_routed": 12,
                           "processed": 14, "results": 14, "reduced": 14, "latency_count": 14}
    ctrl = end["controller"]
    assert value(ctrl, "dranspose_controller_scan_finished") == 1
    assert value(ctrl, "dranspose_controller_scan_events_completed") == 12
    assert sum(value(ctrl, "dranspose_controller_worker_deliveries", worker=w)
               for w in ("worker-0", "worker-1")) == 14
    assert sum(value(ctrl, "dranspose_controller_worker_results_reduced", worker=w)
               for w in ("worker-0", "worker-1")) == 14
    assert value(ctrl, "dranspose_controller_components", role="worker") == 2
    ing = end["eiger-ingester"]
    assert value(ing, "dranspose_ingester_frames_discarded_total", reason="map") == 0
    assert value(ing, "dranspose_ingester_events_pending") == 0
    assert value(ing, "dranspose_ingester_connected_workers") == 2
    image = 16 * 16 * 2
    for w in ("worker-0", "worker-1"):
        fam = end[w]
        duty = value(fam, "dranspose_worker_duty_cycle")
        assert 0.0 <= duty <= 1.0
        assert value(fam, "dranspose_worker_busy_seconds_total") > 0
        assert value(fam, "dranspose_worker_credits_granted_total") >= 256  # the window
        assert value(fam, "dranspose_worker_received_bytes_total") > 0
    assert totals(end, "dranspose_worker_received_bytes_total", "worker-") > 10 * image
    assert totals(end, "dranspose_worker_result_batches_total", "worker-") == value(
        end["reducer"], "dranspose_reducer_result_batches_total")
    assert value(end["reducer"], "dranspose_reducer_received_bytes_total") > 0
    assert value(end["reducer"], "dranspose_reducer_result_latency_seconds_sum") > 0
    for families in end.values():
        check_conventions(families)
        for sample in families.get("dranspose_dropped", []).samples if \
                "dranspose_dropped" in families else []:
            assert sample.value == 0, sample
