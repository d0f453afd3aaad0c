"""End-to-end scan lifecycle with real processes: scans in a row, stop, parameters, timers,
slow reducer, debug worker, dumps and replay, restarts, late joiners, errors."""

from __future__ import annotations

import json
import pickle
import time
from collections import Counter
from pathlib import Path

import h5pyd
import httpx
import pytest

from tests.ensemble import Ensemble, start, uniform, vw
from tests.stins_source import StinsSource


def test_stop_without_data(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    ens.sequence(uniform(["eiger"], 5))
    assert ens.post("/api/v1/stop").status_code == 200
    assert ens.wait_finished()["finished"]
    assert ens.get("/api/v1/status").json()["reason"] == "stopped"


def test_scans_in_a_row_frames_between_scans_are_discarded(ens: Ensemble,
                                                           source: StinsSource) -> None:
    start(ens, source)
    for scan in range(2):
        ens.sequence(uniform(["eiger"], 4))
        source.send_series(4)
        source.send_image(99)  # after the series end: outside the scan
        ens.wait_finished()
        records = ens.published()["records"]
        assert Counter(r["event"] for r in records) == Counter({0: 2, 5: 2, 1: 1, 2: 1, 3: 1,
                                                                4: 1})
        data = sorted(r["images"]["eiger"][0] for r in records if 0 < r["event"] < 5)
        assert data == [0, 1, 2, 3]
        assert {r["scans"] for r in records} == {scan + 1}  # context persists across scans
    ing = [i for i in ens.get("/api/v1/config").json()["ingesters"]][0]
    assert ing["counters"]["discarded_outside_scan"] >= 1  # image 99 (scan 2 data proves it)


def test_new_mapping_mid_scan_aborts_the_old_one(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    first = ens.sequence(uniform(["eiger"], 20))
    source.send_header()
    for i in range(5):
        source.send_image(i)
    second = ens.sequence(uniform(["eiger"], 3))
    assert first != second
    source.send_series(3)
    progress = ens.wait_finished()
    assert progress["total_events"] == 5
    records = ens.published()["records"]
    assert sorted(r["event"] for r in records if 0 < r["event"] < 4) == [1, 2, 3]


def test_parameters_descriptions_defaults_and_hash(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    ens.wait("defaults", lambda: ens.get("/api/v1/parameter/roi1").content == b"bla")
    names = [p["name"] for p in ens.get("/api/v1/parameters").json()]
    assert {"dump_prefix", "roi1", "delay_ms", "reduce_delay_ms"} <= set(names)
    assert names == sorted(names)
    digest = ens.post("/api/v1/parameter/roi1", content=b"[1, 2]").json()
    assert ens.get("/api/v1/parameter/roi1").content == b"[1, 2]"
    assert ens.get("/api/v1/parameter/unknown").status_code == 404

    def converged() -> bool:
        config = ens.get("/api/v1/config").json()
        hashes = [w["parameters_hash"] for w in config["workers"]]
        return hashes == [digest] * 2 and config["reducer"]["parameters_hash"] == digest

    ens.wait("parameter hashes to converge", converged)
    ens.sequence(uniform(["eiger"], 3))
    source.send_series(3)
    ens.wait_finished()
    assert {r["roi1"] for r in ens.published()["records"]} == {"[1, 2]"}


def test_tick_is_exclusive_and_slow_reducer_is_waited_for(ens: Ensemble,
                                                          source: StinsSource) -> None:
    start(ens, source, cls="tests.e2e_classes:TickWorker")
    ens.post("/api/v1/parameter/reduce_delay_ms", content=b"30")
    ens.post("/api/v1/parameter/delay_ms", content=b"20")
    ens.sequence(uniform(["eiger"], 20))
    started = time.monotonic()
    source.send_series(20)
    ens.wait_finished()
    elapsed = time.monotonic() - started
    published = ens.published()
    assert published["count"] == 24  # every result reduced before "finished"
    ticks = sum(r["tick"] for r in published["records"])
    assert 1 <= ticks <= elapsed / 0.2 + 2


def test_debug_worker_gets_tagged_copies(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source, workers=1)
    port = __import__("tests.conftest", fromlist=["free_port"]).free_port()
    ens.spawn("debug", ["debugworker", "-n", "debugworker", "--port", str(port)])
    ens.wait_ready(["eiger"], ["w0", "debugworker"])
    cells = [[vw(i)] if i % 2 else [vw(i), vw(None, ["debug"])] for i in range(6)]
    ens.sequence({"parts": {"main": {"eiger": cells}}, "sequence": ["main"]})
    source.send_series(6)
    ens.wait_finished()
    answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/last_events", params={"number": 10})
    events = pickle.loads(answer.content)
    numbers = [e.event_number for e in events]
    assert numbers == [0, 1, 3, 5, 7]  # start, even data events (1, 3, 5 = cells 0, 2, 4), end
    assert all(isinstance(f, bytes) for e in events for f in e.streams["eiger"].frames)


def test_dump_then_replay_reproduces_the_reducer_result(ens: Ensemble, tmp_path: Path) -> None:
    dump = tmp_path / "eiger-dump.cbors"
    with StinsSource("tcp://127.0.0.1:0", shape=(8, 8), n=10) as src:
        ens.controller()
        ens.reducer()
        ens.worker("w0")
        ens.worker("w1")
        ens.ingester("eiger", src.url, DUMP_PATH=str(dump))
        ens.wait_ready(["eiger"], ["w0", "w1"])
        ens.sequence(uniform(["eiger"], 10))
        src.send_series(10)
        ens.wait_finished()
        live = ens.published()["records"]
    ens.wait("the dump to be closed", lambda: dump.exists() and dump.stat().st_size > 0)
    from dranspose_fast.replay import replay
    from tests.test_replay import run

    _, reducer = run(w="tests.e2e_classes:RecordWorker", r="tests.e2e_classes:RecordReducer",
                     zmq_files=[dump])
    reducer.finish(None)
    replayed = json.loads(reducer.publish["records"])

    def key(r: dict) -> tuple:
        return r["event"], json.dumps(r["images"]), json.dumps(r["streams"])

    # replay spreads events over its own two workers; the data each event carried is identical
    assert sorted(set(map(key, live))) == sorted(set(map(key, replayed)))
    assert replay is not None


def test_worker_restart_between_scans_and_late_joiners(ens: Ensemble,
                                                       source: StinsSource) -> None:
    start(ens, source, workers=1)
    ens.sequence(uniform(["eiger"], 3))
    source.send_series(3)
    ens.wait_finished()
    ens.worker("w-late")  # joins after the first scan: learns the current state at once
    ens.stop("w0")
    ens.wait("w0 to disappear", lambda: {w["name"] for w in ens.get("/api/v1/config").json()[
        "workers"]} == {"w-late"})
    ens.sequence(uniform(["eiger"], 4))
    source.send_series(4)
    ens.wait_finished()
    assert {r["worker"] for r in ens.published()["records"]} == {"w-late"}

    def ingester_forgot_w0() -> bool:
        ing = ens.get("/api/v1/config").json()["ingesters"][0]
        return {w["name"] for w in ing["connected_workers"].values()} == {"w-late"}

    # a worker that stopped saying hello is dropped after 4 hello intervals
    ens.wait("the ingester to forget w0", ingester_forgot_w0, timeout=10)


def test_ingester_restart_between_scans(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    ens.sequence(uniform(["eiger"], 2))
    source.send_series(2)
    ens.wait_finished()
    ens.stop("eiger-ingester")
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], ["w0", "w1"])
    ens.sequence(uniform(["eiger"], 3))
    source.send_series(3)
    ens.wait_finished()
    assert len(ens.published()["records"]) == 3 + 4


def test_errors_are_counted_and_the_scan_goes_on(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source, cls="tests.e2e_classes:FailingRecordWorker")
    ens.sequence(uniform(["eiger"], 5))
    source.send_header()
    source.send_raw([b"not json at all"])  # malformed upstream frame
    for i in range(5):
        source.send_image(i)
    source.send_end()
    ens.wait_finished()
    records = ens.published()["records"]
    assert sorted(r["event"] for r in records if 0 < r["event"] < 6) == [1, 2, 4, 5]
    status = ens.get("/api/v1/status").json()
    assert sum(w["errors"] for w in status["workers"].values()) == 1
    ens.wait("the malformed frame in the ingester's counters", lambda: ens.get(
        "/api/v1/config").json()["ingesters"][0]["counters"]["malformed"] == 1, timeout=10)


def test_unloadable_worker_class_takes_no_events_and_is_reported(
        ens: Ensemble, source: StinsSource) -> None:
    ens.controller()
    ens.reducer()
    ens.worker("w0", cls="tests.e2e_classes:NoSuchClass")
    ens.worker("w1")
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], ["w0", "w1"])
    ens.wait("w0 reported not ready", lambda: "NoSuchClass" in ens.get(
        "/api/v1/status").json()["not_ready_workers"].get("w0", ""))
    # a map that needs two workers in one event cannot run on the one ready worker
    two = {"parts": {"main": {"eiger": [[vw(0), vw(1)]]}}, "sequence": ["main"]}
    answer = ens.post("/api/v1/sequence", json=two)
    assert answer.status_code == 400 and "only 1 workers available" in answer.text
    ens.sequence(uniform(["eiger"], 3))
    source.send_series(3)
    assert ens.wait_finished()["finished"]
    records = ens.published()["records"]
    assert {r["worker"] for r in records} == {"w1"}
    assert sorted(r["event"] for r in records if 0 < r["event"] < 4) == [1, 2, 3]
    status = ens.get("/api/v1/status").json()
    assert status["reason"] == "completed" and status["lost_workers"] == {}
    assert "NoSuchClass" in ens.log("w0")


def test_redis_restart_ends_the_scan_and_everything_recovers(ens: Ensemble, source: StinsSource,
                                                             redis_server) -> None:
    start(ens, source)
    ens.sequence(uniform(["eiger"], 50))
    source.send_header()
    redis_server.restart()
    ens.wait("the scan to end", lambda: ens.get("/api/v1/status").json()["reason"]
             == "redis restarted", timeout=30)
    ens.wait_ready(["eiger"], ["w0", "w1"], timeout=30)
    ens.sequence(uniform(["eiger"], 3))
    source.send_series(3)
    assert ens.wait_finished()["finished"]


def test_reducer_served_over_h5pyd_and_logs(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    ens.sequence(uniform(["eiger"], 2))
    source.send_series(2)
    ens.wait_finished()
    ens.published()
    with h5pyd.File("/", "r", endpoint=ens.reducer_url) as f:
        assert int(f["count"][()]) == 6
    logs = ens.get("/api/v1/logs", params={"level": "INFO"}).json()
    assert logs and all(e["levelname"] in {"INFO", "WARNING", "ERROR", "CRITICAL"} for e in logs)
    assert ens.get("/api/v1/load").status_code == 200
    assert pytest is not None


def test_reactive_scan_appends_while_running(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    part = {"eiger": [[vw(i)] for i in range(3)]}
    ens.sequence({"parts": {"line": part}, "sequence": ["line"]}, open="true")
    assert ens.get("/api/v1/progress").json()["total_events"] is None
    source.send_header()
    for i in range(3):
        source.send_image(i)
    answer = ens.post("/api/v1/sequence/append", json={"sequence": ["line", "line"]})
    assert answer.status_code == 200, answer.text
    for i in range(3, 9):
        source.send_image(i)
    assert ens.post("/api/v1/sequence/close").status_code == 200
    source.send_end()
    progress = ens.wait_finished()
    assert progress["total_events"] == 11
    records = ens.published()["records"]
    frames = sorted(r["images"]["eiger"][0] for r in records if 0 < r["event"] < 10)
    assert frames == list(range(9))


def test_new_reducer_instance_between_scans(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    ens.sequence(uniform(["eiger"], 2))
    source.send_series(2)
    ens.wait_finished()
    assert ens.published()["count"] == 6
    ens.stop("reducer")
    ens.reducer()  # a new instance on new ports: workers follow its config
    ens.wait_ready(["eiger"], ["w0", "w1"])
    ens.sequence(uniform(["eiger"], 3))
    source.send_series(3)
    ens.wait_finished()
    assert ens.published()["count"] == 7
