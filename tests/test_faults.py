"""A lost worker loses nothing: kill -9 of a worker mid-scan, with real processes.

Each case runs controller, reducer, three workers and a STINS ingester as processes on a
private Redis, kills the worker that holds the most events while it works (100 ms per event),
and checks that every image event is reduced exactly once, that the events the dead worker
held came back marked (``EventData.rebound_from``), that the scan's totals add up and that
the next scan works. The killed worker comes back under the same name at once in one case
(a new process: the controller sees its new service uuid), or not at all (its config expires).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.ensemble import Ensemble, uniform
from tests.stins_source import StinsSource

N = 60
IMAGES = set(range(1, N + 1))  # 0 and N+1: the series start and end, sent to every worker
WORKERS = ["w0", "w1", "w2"]


def _start(ens: Ensemble, source: StinsSource, worker_env: dict[str, str] | None = None,
           **ingester_env: str) -> None:
    ens.controller()
    ens.reducer()
    for name in WORKERS:
        ens.worker(name, **(worker_env or {}))
    ens.ingester("eiger", source.url, **ingester_env)
    ens.wait_ready(["eiger"], WORKERS)


def _kill_the_busiest(ens: Ensemble) -> str:
    busy: dict[str, str] = {}

    def holding() -> bool:
        for name, w in ens.get("/api/v1/status").json()["workers"].items():
            if w["outstanding"] >= 20:
                busy["name"] = name
                return True
        return False

    ens.wait("a worker busy with the scan", holding)
    ens.kill(busy["name"])
    return busy["name"]


def _images_reduced(published: dict[str, Any]) -> Counter[int]:
    return Counter(r["event"] for r in published["records"] if r["event"] in IMAGES)


def _next_scan_works(ens: Ensemble, source: StinsSource) -> None:
    ens.post("/api/v1/parameter/delay_ms", content=b"0")
    ens.sequence(uniform(["eiger"], 5))
    source.send_series(5)
    assert ens.wait_finished()["finished"]
    assert ens.get("/api/v1/status").json()["reason"] == "completed"


def _run_with_a_kill(ens: Ensemble, source: StinsSource, restart: bool) -> None:
    _start(ens, source)
    ens.post("/api/v1/parameter/delay_ms", content=b"100")
    ens.sequence(uniform(["eiger"], N))
    thread = source.send_series_in_thread(N)
    victim = _kill_the_busiest(ens)
    if restart:
        ens.respawn(victim)
    thread.join(30)
    ens.wait("the lost worker report", lambda: any(
        name.split("#")[0] == victim for name in ens.get("/api/v1/status").json()[
            "lost_workers"]), timeout=30)
    assert ens.wait_finished(timeout=60)["finished"]
    status = ens.get("/api/v1/status").json()
    lost = next(w for name, w in status["lost_workers"].items() if name.split("#")[0] == victim)
    assert lost["events_lost"] == 0, lost
    assert lost["events_rebound"] > 0 and lost["rebound_to"] in WORKERS, lost
    assert status["reason"] == "completed"
    published = ens.published()
    reduced = _images_reduced(published)
    assert set(reduced) == IMAGES, sorted(IMAGES - set(reduced))
    assert max(reduced.values()) == 1, [e for e, n in reduced.items() if n > 1]
    rebound = [r for r in published["records"] if r["rebound_from"] is not None]
    assert rebound and {r["rebound_from"] for r in rebound} == {victim}
    assert {r["worker"] for r in rebound} == {lost["rebound_to"]}
    ingester = status["components"]["ingester:eiger-ingester"]
    assert ingester["counters.resent_events"] > 0
    assert status["dropped_total"] == 0, status["dropped"]
    _next_scan_works(ens, source)


def test_a_killed_worker_loses_nothing(ens: Ensemble, source: StinsSource) -> None:
    _run_with_a_kill(ens, source, restart=False)


def test_a_worker_restarted_under_its_name_loses_nothing(ens: Ensemble,
                                                         source: StinsSource) -> None:
    _run_with_a_kill(ens, source, restart=True)


def test_without_retention_the_loss_is_counted_exactly(ens: Ensemble,
                                                       source: StinsSource) -> None:
    _start(ens, source, DFAST_RETENTION_EVENTS="0")
    ens.post("/api/v1/parameter/delay_ms", content=b"100")
    ens.sequence(uniform(["eiger"], N))
    thread = source.send_series_in_thread(N)
    victim = _kill_the_busiest(ens)
    thread.join(30)
    assert ens.wait_finished(timeout=60)["finished"]
    status = ens.get("/api/v1/status").json()
    lost = status["lost_workers"][victim]
    assert lost["events_lost"] == len(lost["lost_events"]) > 0
    assert lost["events_rebound"] == 0
    assert status["reason"] == (f"completed; {lost['events_lost']} events lost with workers "
                                f"{victim}")
    reduced = _images_reduced(ens.published())
    assert not set(reduced) & set(lost["lost_events"])
    assert set(reduced) | (set(lost["lost_events"]) & IMAGES) == IMAGES  # sent = reduced + lost
    _next_scan_works(ens, source)


def test_a_restarted_controller_resumes_the_scan(ens: Ensemble, source: StinsSource) -> None:
    ens.env["DFAST_LOCK_TTL"] = "1"  # the dead controller's lock expires quickly
    _start(ens, source, worker_env={"DFAST_CREDIT_WINDOW": "8"})  # progress in small steps
    ens.post("/api/v1/parameter/delay_ms", content=b"50")
    uid = ens.sequence(uniform(["eiger"], N))
    thread = source.send_series_in_thread(N)
    ens.wait("some events done", lambda: ens.get("/api/v1/progress").json()[
        "completed_events"] >= 10)
    ens.kill("controller")
    ens.respawn("controller")
    ens.wait("the new controller", lambda: ens.get("/api/v1/status").json()[
        "mapping_uuid"] == uid, timeout=30)
    assert not ens.get("/api/v1/progress").json()["finished"]  # it was killed mid-scan
    thread.join(30)
    assert ens.wait_finished(timeout=60)["finished"]
    status = ens.get("/api/v1/status").json()
    assert status["reason"] == "completed", status
    assert status["counters"]["scans_resumed"] == 1
    reduced = _images_reduced(ens.published())
    assert set(reduced) == IMAGES, sorted(IMAGES - set(reduced))
    assert max(reduced.values()) == 1, [e for e, n in reduced.items() if n > 1]
    assert status["dropped_total"] == 0, status["dropped"]
    _next_scan_works(ens, source)
