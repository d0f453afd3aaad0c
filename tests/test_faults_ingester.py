"""A restarted ingester resumes its stream: kill -9 of the ingester mid-scan, real processes
(and a worker lost after it, in the second case).

Controller, reducer, three workers (small credit windows, 50 ms per event, so the ingester
holds a backlog of upstream messages) and a STINS ingester run as processes on a private
Redis. The detector sends the header and the first half of the images, the ingester is
killed and started again under its name, then the detector sends the rest. What the dead
process had taken from upstream and not delivered is lost: the resumed ingester finds the gap
from the first frame number it receives, the workers drop the events with a lost frame, and
the scan's totals must add up exactly: every image reduced once or counted lost, never both.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.ensemble import Ensemble, uniform
from tests.stins_source import StinsSource

N = 60
HALF = 30
IMAGES = set(range(1, N + 1))  # event i + 1 is frame i; 0 and N + 1: series start and end
WORKERS = ["w0", "w1", "w2"]


def _ingester_uuid(ens: Ensemble) -> str | None:
    ingesters = ens.get("/api/v1/config").json()["ingesters"]
    return ingesters[0]["service_uuid"] if ingesters else None


def _restart_the_ingester_mid_scan(ens: Ensemble, source: StinsSource, delay_ms: bytes) -> None:
    """Three workers with small credit windows (the ingester holds a backlog), the header and
    the first half of the images sent, then the ingester killed and started again."""
    ens.controller()
    ens.reducer()
    for name in WORKERS:
        ens.worker(name, DFAST_CREDIT_WINDOW="4")
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], WORKERS)
    ens.post("/api/v1/parameter/delay_ms", content=delay_ms)
    ens.sequence(uniform(["eiger"], N))
    source.send_header()
    for i in range(HALF):
        source.send_image(i)
    ens.wait("some events done", lambda: ens.get("/api/v1/progress").json()[
        "completed_events"] >= 5)
    before = _ingester_uuid(ens)
    ens.kill("eiger-ingester")
    ens.respawn("eiger-ingester")
    ens.wait("the new ingester", lambda: _ingester_uuid(ens) not in (None, before))


def _finish_the_scan(ens: Ensemble, source: StinsSource) -> tuple[dict[str, Any], Counter[int]]:
    """Send the second half and the end; the scan's status and how often each image was
    reduced (each at most once)."""
    for i in range(HALF, N):
        source.send_image(i)
    source.send_end()
    assert ens.wait_finished(timeout=60)["finished"]
    status: dict[str, Any] = ens.get("/api/v1/status").json()
    reduced = Counter(r["event"] for r in ens.published()["records"] if r["event"] in IMAGES)
    assert max(reduced.values()) == 1, [e for e, n in reduced.items() if n > 1]
    return status, reduced


def test_a_restarted_ingester_resumes_and_counts_what_it_lost(
        ens: Ensemble, source: StinsSource) -> None:
    _restart_the_ingester_mid_scan(ens, source, b"50")
    status, reduced = _finish_the_scan(ens, source)
    loss = status["lost_upstream"]["eiger"]
    assert loss["exact"] is True
    lost_events = set(loss["first_events"])
    assert set(range(HALF + 1, N + 1)) <= set(reduced)  # everything after the restart
    assert not lost_events & set(reduced)
    assert len(reduced) + loss["events"] == N  # sent = reduced + counted losses
    assert loss["events"] > 0 and lost_events <= set(range(1, HALF + 1))
    assert status["reason"] == (f"completed; {loss['events']} events lost upstream in stream "
                                "eiger (ingester restart)")
    resumed = next(i for i in ens.get("/api/v1/config").json()["ingesters"])["resumed"]
    assert resumed["eiger"]["exact"] and resumed["eiger"]["skipped"] == HALF + 1

    ens.post("/api/v1/parameter/delay_ms", content=b"0")
    ens.sequence(uniform(["eiger"], 5))
    source.send_series(5)
    assert ens.wait_finished()["finished"]
    after: dict[str, Any] = ens.get("/api/v1/status").json()
    assert after["reason"] == "completed" and after["lost_upstream"] == {}


def test_an_ingester_restart_then_a_lost_worker_still_adds_up(
        ens: Ensemble, source: StinsSource) -> None:
    """Two faults in one scan: the ingester restarts (losing what its dead process held),
    then the worker with most events dies for good. The new ingester retained what it
    routed since (frames and lost placeholders alike) and resends it to the worker that
    takes over: every image is reduced once or counted lost upstream, none lost twice."""
    _restart_the_ingester_mid_scan(ens, source, b"100")
    workers = ens.get("/api/v1/status").json()["workers"]
    victim = max(workers, key=lambda name: workers[name]["outstanding"])
    ens.kill(victim)  # not restarted: its config expires, its events are rebound
    status, reduced = _finish_the_scan(ens, source)
    loss = status["lost_upstream"]["eiger"]
    lost_worker = status["lost_workers"][victim]
    assert lost_worker["events_lost"] == 0 and lost_worker["events_rebound"] > 0
    assert loss["events"] > 0 and not set(loss["first_events"]) & set(reduced)
    assert len(reduced) + loss["events"] == N  # sent = reduced + counted losses
    assert status["reason"] == (f"completed; {loss['events']} events lost upstream in "
                                "stream eiger (ingester restart)")
