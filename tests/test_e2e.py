"""End-to-end scans with real processes: controller, ingesters, workers, reducer, Redis."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.ensemble import Ensemble, records_by_event, start, uniform, vw
from tests.stins_source import StinsSource


def test_simple_scan(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    ens.sequence(uniform(["eiger"], 10))
    source.send_series()
    progress = ens.wait_finished()
    assert progress == {"last_assigned": 11, "completed_events": 12, "total_events": 12,
                        "finished": True} or progress["finished"]
    published = ens.published()
    events = Counter(r["event"] for r in published["records"])
    # start and end broadcast to both workers, 10 data events once each
    assert events == Counter({0: 2, 11: 2, **{i: 1 for i in range(1, 11)}})
    for r in published["records"]:
        assert list(r["streams"]) == ["eiger"]
        if 0 < r["event"] < 11:
            assert r["streams"]["eiger"][-1] == 128  # 8×8 uint16 image


def test_constraints_keep_events_on_one_worker(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source, workers=3)
    cells = [[vw(i // 3)] for i in range(12)]  # 0.2's batched-map trick: 3 events per worker
    ens.sequence({"parts": {"main": {"eiger": cells}}, "sequence": ["main"]})
    source.send_series(12)
    ens.wait_finished()
    by_event = records_by_event(ens.published())
    for group in range(4):
        owners = {by_event[1 + 3 * group + k][0]["worker"] for k in range(3)}
        assert len(owners) == 1, by_event
    # every data frame arrived once, in order: frame i has pixel value i
    for evn in range(1, 13):
        (rec,) = by_event[evn]
        assert rec["images"]["eiger"] == [evn - 1, evn - 1]


def test_tags_broadcast_discard_and_null(ens: Ensemble, tmp_path: Path) -> None:
    with StinsSource("tcp://127.0.0.1:0", shape=(4, 4), n=8) as eiger, \
            StinsSource("tcp://127.0.0.1:0", shape=(2, 2), n=4) as slow:
        ens.controller()
        ens.reducer()
        ens.worker("w0")
        ens.worker("w1")
        ens.worker("special", tags=["special"])
        ens.ingester("eiger", eiger.url)
        ens.ingester("slow", slow.url)
        ens.wait_ready(["eiger", "slow"], ["w0", "w1", "special"])
        eiger_cells = [
            [vw(0)], [], [vw(None)], [vw(3, ["special"])], [vw(4)], [vw(5)], [], [vw(7)],
        ]
        slow_cells = [[vw(0)], None, [vw(None)], None, [vw(4)], None, [vw(6)], None]
        ens.sequence({"parts": {"main": {"eiger": eiger_cells, "slow": slow_cells}},
                      "sequence": ["main"]})
        eiger.send_series(8)
        slow.send_series(4)
        ens.wait_finished()
        by_event = records_by_event(ens.published())
    everyone = {"w0", "w1", "special"}
    # wrap events: one broadcast per tag set, so every worker gets start and end
    assert {r["worker"] for r in by_event[0]} == everyone
    assert {r["worker"] for r in by_event[9]} == everyone
    assert 2 not in by_event  # discarded eiger frame, no slow frame: nobody gets event 2
    assert {r["worker"] for r in by_event[3]} == {"w0", "w1"}  # "all" with tags {generic}
    assert [r["worker"] for r in by_event[4]] == ["special"]
    (e1,) = by_event[1]
    assert e1["images"] == {"eiger": [0, 0], "slow": [0, 0]}  # same constraint: one worker
    (e7,) = by_event[7]
    assert e7["images"] == {"slow": [3, 3]}  # the eiger frame 6 was discarded; 4th slow frame
    (e5,) = by_event[5]
    assert e5["images"] == {"eiger": [4, 4], "slow": [2, 2]}
    (e8,) = by_event[8]
    assert e8["images"] == {"eiger": [7, 7]}  # discards consumed their frames: no shift


def test_parts_and_sequence(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    body = {"parts": {"main": {"eiger": [[vw(i)] for i in range(4)]},
                      "end": {"eiger": [[vw(None)]]}},
            "sequence": ["main", "main", "end"]}
    ens.sequence(body)
    back = ens.get("/api/v1/sequence").json()
    assert back["sequence"] == ["reserved_start_end", "main", "main", "end", "reserved_start_end"]
    assert back["parts"]["end"]["mapping"]["eiger"] == [[{"tags": ["generic"], "constraint": None}]]
    source.send_series(9)
    progress = ens.wait_finished()
    assert progress["total_events"] == 11 and progress["completed_events"] == 11
    by_event = records_by_event(ens.published())
    assert len(by_event[9]) == 2  # the "end" part's broadcast reached both workers


def test_validation_errors_are_http_4xx(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source, workers=1)
    answer = ens.post("/api/v1/sequence", json=uniform(["nosuch"], 3))
    assert answer.status_code == 400 and "not available" in answer.json()["detail"]
    two = {"parts": {"main": {"eiger": [[vw(0), vw(1)]]}}, "sequence": ["main"]}
    answer = ens.post("/api/v1/sequence", json=two)
    assert answer.status_code == 400
    assert answer.json()["detail"] == "only 1 workers available, but 2 required"
    answer = ens.post("/api/v1/sequence", json={"parts": {"main": {"eiger": [[vw(0)], []]}},
                                                "sequence": ["nope"]})
    assert answer.status_code == 400 and "nope" in answer.json()["detail"]
    answer = ens.post("/api/v1/sequence", content=b"{not json")
    assert answer.status_code == 422
    assert ens.get("/api/v1/status").status_code == 200
