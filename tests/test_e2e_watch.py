"""No silent stall (issue: faults): maps that cannot run are refused, a scan that stops
progressing says what it waits for, a restarted reducer ends the scan with a true reason.
Real processes (tests/ensemble.py), stall timeout 1 s."""

from __future__ import annotations

from tests.ensemble import Ensemble, start, uniform, vw
from tests.stins_source import StinsSource


def test_map_whose_tags_no_worker_has_is_refused(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    body = {"parts": {"main": {"eiger": [[vw(0, ["fast", "gpu"])], [vw(1)]]}},
            "sequence": ["main"]}
    answer = ens.post("/api/v1/sequence", json=body)
    assert answer.status_code == 400
    assert "['fast', 'gpu']" in answer.text
    assert ens.get("/api/v1/status").json()["mapping_uuid"] is None  # nothing started


def test_missing_series_start_is_reported_as_a_stall(ens: Ensemble,
                                                     source: StinsSource) -> None:
    ens.env["DFAST_STALL_TIMEOUT"] = "1"
    start(ens, source)
    ens.sequence(uniform(["eiger"], 4))
    for i in range(4):  # images without their series header: the ingester drops them
        source.send_image(i)

    def stalled() -> bool:
        return ens.get("/api/v1/status").json()["stalled"] is not None

    ens.wait("a stall report", stalled, timeout=30)
    status = ens.get("/api/v1/status").json()
    assert not status["finished"] and status["reason"] is None
    waits = status["stalled"]["waiting_for"]
    assert any(w.startswith("ingester eiger-ingester (streams eiger) routed 0 of") for w in waits)
    assert any("assigned events not yet processed" in w for w in waits)
    assert ens.get("/api/v1/progress").json().keys() == {
        "last_assigned", "completed_events", "total_events", "finished"}
    logs = ens.get("/api/v1/logs", params={"level": "ERROR"}).json()
    reports = [e for e in logs if "made no progress" in e.get("msg", "")]
    assert len(reports) == 1, reports  # once, not every check
    # the series comes after all: the stall clears and the scan completes
    source.send_series(4)
    assert ens.wait_finished()["finished"]
    status = ens.get("/api/v1/status").json()
    assert status["stalled"] is None and status["reason"] == "completed"


def test_reducer_restart_ends_the_scan_with_that_reason(ens: Ensemble,
                                                        source: StinsSource) -> None:
    start(ens, source)
    ens.sequence(uniform(["eiger"], 50))
    source.send_header()
    for i in range(5):
        source.send_image(i)
    ens.wait("results reduced", lambda: (ens.get("/api/v1/status").json()["reducer"]
                                         or {}).get("reduced", 0) >= 5)
    ens.kill("reducer")
    ens.respawn("reducer")
    ens.wait("the scan to end", lambda: ens.get("/api/v1/status").json()["finished"],
             timeout=30)
    status = ens.get("/api/v1/status").json()
    assert status["reason"] == "reducer restarted"
    assert status["counters"]["results_not_in_publish"] >= 5
    # the next scan runs on the new reducer
    source.send_end()
    ens.sequence(uniform(["eiger"], 3))
    source.send_series(3)
    assert ens.wait_finished()["finished"]
    assert ens.get("/api/v1/status").json()["reason"] == "completed"


def test_a_controller_that_lost_its_lock_exits(ens: Ensemble) -> None:
    import redis

    from dranspose_fast.runtime.redis_messages import Keys

    ens.env["DFAST_LOCK_TTL"] = "1"
    ens.controller()
    r = redis.Redis.from_url(ens.env["REDIS_URL"])
    ens.wait("the controller to serve", lambda: ens.get("/api/v1/progress").status_code == 200)
    r.set(Keys.LOCK, b"another-controller")  # its lock expired and another took it
    proc = ens.procs.pop("controller")  # ens.wait would stop at its exit
    code = proc.wait(20)
    assert code == 0, ens.log("controller")
    assert "stops serving" in ens.log("controller")
    assert r.get(Keys.LOCK) == b"another-controller"
