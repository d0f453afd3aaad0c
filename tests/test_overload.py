"""Overload without silent loss (issue "Data plane at the limit", item 4), real processes.

* Slow workers: the source streams 1.3 GB (20,000 × 64 KiB images) into two workers that take
  1 ms per event.  Back-pressure reaches the source (its sends block), memory stays bounded in
  every process, and every frame is processed once with its own image; nothing is dropped.
* A worker that vanishes mid-scan: what it held and what was queued for it is counted, shows in
  ``/api/v1/status`` (``lost_workers``, ``dropped``) and in the logs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dranspose_fast.controller.scan import LossLog, loss_totals
from tests.ensemble import Ensemble, frame_logs, uniform, vw
from tests.load_classes import END, HEADER
from tests.stins_source import StinsSource

MB = 1 << 20


def rss(pid: int) -> int:
    """Resident set size of a process in bytes (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """The largest RSS of some processes, sampled every 50 ms in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss(pid))

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peak


def check_once_in_order(logs: dict[str, dict[str, Any]], workers: list[str], n: int) -> None:
    """Data events 1..n reached exactly one worker each, with image ``event - 1``; every
    worker got the header (event 0) and the series end (event n + 1)."""
    data = []
    for w in workers:
        log = logs[w]
        wrap = (log["event"] == 0) | (log["event"] == n + 1)
        assert sorted(log["id"][wrap].tolist()) == [END, HEADER], (w, log["event"][wrap])
        assert (log["stream"] == log["stream"][0]).all()
        data.append(log["event"][~wrap])
        assert (log["id"][~wrap] == log["event"][~wrap] - 1).all(), f"{w} got a wrong image"
        assert len(data[-1]) > n // 4, f"{w} got only {len(data[-1])} events"
    events = np.sort(np.concatenate(data))
    assert len(events) == n, f"{len(events)} data frames processed for {n} sent"
    assert (events == np.arange(1, n + 1)).all(), "frames lost or delivered twice"


def test_slow_workers_push_back_to_the_source_and_nothing_is_lost(ens: Ensemble) -> None:
    n, workers, delay = 20_000, ["w0", "w1"], 0.001
    frame = 64 * 1024
    with StinsSource("tcp://127.0.0.1:0", shape=(128, 128), dtype="uint32", n=n) as source:
        assert source.image(0).nbytes == frame
        ens.controller()
        ens.reducer("tests.load_classes:FrameLogReducer")
        for w in workers:
            ens.worker(w, "tests.load_classes:SlowFrameLog")
        ens.ingester("eiger", source.url)
        ens.wait_ready(["eiger"], workers)
        watched = ["eiger-ingester", *workers]
        sampler = RssSampler({name: ens.procs[name].pid for name in watched})
        ens.sequence(uniform(["eiger"], n))
        t0 = time.monotonic()
        source.send_series()
        sent = time.monotonic() - t0
        processed_when_sent = sum(w["processed"] for w in
                                  ens.get("/api/v1/status").json()["workers"].values())
        progress = ens.wait_finished(timeout=120)
        elapsed = time.monotonic() - t0
        peak = sampler.stop()
        assert progress["completed_events"] == n + 2
        logs = frame_logs(ens)
        status = ens.get("/api/v1/status").json()
    check_once_in_order(logs, workers, n)
    assert status["lost_workers"] == {}
    assert status["dropped_total"] == 0, status["dropped"]
    assert status["components"]["ingester:eiger-ingester"]["counters.forwarded"] >= n

    # back-pressure: when the source was done, at most `in_flight` events were not processed,
    # so it was held back (unthrottled it sends 1.3 GB in about a second)
    in_flight = n + 2 - processed_when_sent
    slowest = n * delay / len(workers)  # the workers' own minimum time
    report = (f"sent in {sent:.1f} s, all processed after {elapsed:.1f} s (workers need "
              f">= {slowest:.1f} s); {in_flight} events ({in_flight * frame / MB:.0f} MB) in "
              f"flight when the source was done; peak RSS "
              + ", ".join(f"{k} {v / MB:.0f} MB" for k, v in peak.items()))
    print("\n" + report)
    assert in_flight * frame < 400 * MB, report
    assert sent > slowest - 400 * MB / frame * delay / len(workers), report
    # memory: far below the 1.3 GB that went through
    assert all(0 < value < 400 * MB for value in peak.values()), report


def test_a_vanished_worker_is_counted_reported_and_logged(ens: Ensemble) -> None:
    n = 120
    with StinsSource("tcp://127.0.0.1:0", shape=(4, 4), dtype="uint32", n=n) as source:
        ens.controller()
        ens.reducer("tests.load_classes:FrameLogReducer")
        for w in ("w0", "w1"):
            ens.worker(w, "tests.load_classes:FrameLog")
        # without retention: what the lost worker held is lost and counted (with it: resent,
        # tests/test_faults.py)
        ens.ingester("eiger", source.url, DFAST_RETENTION_EVENTS="0")
        ens.wait_ready(["eiger"], ["w0", "w1"])
        # groups of 10 events: the two workers alternate and everything is bound at once
        ens.sequence({"parts": {"main": {"eiger": [[vw(i // 10)] for i in range(n)]}},
                      "sequence": ["main"]})
        thread = source.send_series_in_thread(n, delay=0.03)
        time.sleep(1.0)
        victim = ens.procs.pop("w1")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        thread.join(30)
        # w1's config expires (TTL 2 s): the controller reports it, the scan ends without it
        ens.wait("the lost worker", lambda: "w1" in ens.get("/api/v1/status").json()[
            "lost_workers"], timeout=30)
        ens.wait_finished(timeout=30)
        first = ens.get("/api/v1/status").json()
        logs = frame_logs(ens)
        # a new scan makes whatever the ingester still queued for w1 stale: it is dropped
        ens.sequence(uniform(["eiger"], 2))
        source.send_series(2)
        ens.wait_finished(timeout=30)

        def counted() -> bool:
            dropped = ens.get("/api/v1/status").json()["dropped"]
            return bool(dropped.get("ingester.dropped_for_absent_workers"))

        ens.wait("the ingester's drop count", counted, timeout=10)
        second = ens.get("/api/v1/status").json()
        lost = first["lost_workers"]["w1"]
        # the logs say so: the components' own messages and the controller's summary
        wanted: dict[str, Callable[[str], bool]] = {
            "controller": lambda m: "w1 lost" in m and f"{lost['events_lost']} events lost" in m,
            "ingester": lambda m: "dropped" in m and "w1" in m and "data lost" not in m,
            "summary of w1": lambda m: "data lost: controller.events_lost_with_workers" in m,
            "summary of the ingester": lambda m: "data lost: ingester.dropped_for_abs" in m,
        }

        def logged() -> bool:
            messages = [e["msg"] for e in ens.get("/api/v1/logs", params={"level": "ERROR"})
                        .json()]
            return all(any(test(m) for m in messages) for test in wanted.values())

        ens.wait("the logs of the loss", logged, timeout=10)

    assert lost["events_lost"] > 0 and lost["events_lost"] == len(lost["lost_events"])
    # every event was processed by w0 or is accounted for in w1's deliveries
    w0 = logs["w0"]
    assert (w0["id"][(w0["event"] >= 1) & (w0["event"] <= n)]
            == w0["event"][(w0["event"] >= 1) & (w0["event"] <= n)] - 1).all()
    w0_events = set(w0["event"].tolist())
    assert len(w0_events) == len(w0["event"]) == first["workers"]["w0"]["processed"]
    assert w0_events.isdisjoint(e for e in lost["lost_events"] if 1 <= e <= n)
    assert len(w0_events) + lost["deliveries"] == n + 4  # wraps went to both
    # the status sums the loss: the events w1 held (controller), what the ingester dropped
    dropped = second["dropped"]
    assert dropped["controller.events_lost_with_workers"] == lost["events_lost"]
    assert 0 < dropped["ingester.dropped_for_absent_workers"] <= lost["events_lost"]
    assert second["dropped_total"] == sum(dropped.values())
    assert second["counters"]["workers_lost"] == 1


def test_loss_totals_sum_every_loss_counter_by_role(caplog: pytest.LogCaptureFixture) -> None:
    components: dict[str, dict[str, float]] = {
        "ingester:a": {"counters.dropped_for_absent_workers": 3, "counters.malformed": 1,
                       "counters.forwarded": 100, "counters.discarded_by_map": 7},
        "ingester:b": {"counters.dropped_for_absent_workers": 2, "counters.malformed": 0},
        "worker:w0": {"dropped_old_scan": 4, "malformed_batches": 1, "processed_events": 9},
        "reducer:reducer": {"undecodable_results": 5, "dropped_held_overflow": 0,
                            "results": 50},
    }
    totals = loss_totals(components, {"events_lost_with_workers": 6, "workers_lost": 1})
    assert totals == {
        "ingester.dropped_for_absent_workers": 5, "ingester.malformed": 1,
        "worker.dropped_old_scan": 4, "worker.malformed_batches": 1,
        "reducer.undecodable_results": 5, "reducer.dropped_held_overflow": 0,
        "controller.events_lost_with_workers": 6,
    }
    log = LossLog(logging.getLogger("test.losses"))
    with caplog.at_level(logging.ERROR, "test.losses"):
        log.update(totals)
        log.update(totals)  # no change: nothing new to say
        log.update({**totals, "ingester.malformed": 0})  # a restarted ingester counts from 0
        log.update({**totals, "ingester.malformed": 2})
    messages = [r.getMessage() for r in caplog.records]
    assert sorted(messages[:6]) == sorted(
        f"data lost: {k} rose by {v} to {v}" for k, v in totals.items() if v)
    assert messages[6:] == ["data lost: ingester.malformed rose by 2 to 2"]
