"""Sardana over HTTP: the parser, the ingester app under real uvicorn, and whole scans.

The end-to-end tests run real processes (controller, reducer, workers, and
``dranspose-fast http_ingester`` serving ``dranspose_fast.ingesters.http_sardana:app``) on a
private Redis, make the map with ``POST /api/v1/sardana_hook`` and post the scan as Sardana's
recorder does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dranspose_fast.api.server import HttpThread
from dranspose_fast.data.sardana import (
    SardanaDataDescription,
    SardanaPacket,
    SardanaRecordData,
    SardanaRecordEnd,
)
from dranspose_fast.dump import read_dump
from dranspose_fast.errors import DecodeError, DumpError
from dranspose_fast.event import EventData, ResultData, StreamData
from dranspose_fast.middlewares.sardana import SardanaDecodeError, parse
from dranspose_fast.protocol import StreamName
from dranspose_fast.runtime.redis_messages import Keys
from tests.compat.dr02 import dr02_python, dr02_python_or_none, run_dr02, run_dr02_raw
from tests.conftest import free_port, wait_for
from tests.ensemble import Ensemble, records_by_event

APP = "dranspose_fast.ingesters.http_sardana:app"

# A data description as Sardana's recorder posts it (0.2's example, trimmed).
DESC: dict[str, Any] = {
    "type": "DataDescription", "serialno": 20338, "scandir": "/data/staff/femtomax/20230413",
    "title": "burstscan dummy_mot_01 0.0 0.1 2 50",
    "column_desc": [{"name": "point_nb", "label": "#Pt No", "dtype": "int64", "shape": []},
                    {"name": "dummy_mot_01", "dtype": "float64", "shape": [],
                     "min_value": 0, "max_value": 0.1, "is_reference": True}],
    "ref_moveables": ["dummy_mot_01"], "estimatedtime": -2.6585786096205566,
    "total_scan_intervals": 2, "starttime": "Mon Apr 17 14:19:35 2023",
    "scanfile": ["stream.daq", "tests_03.h5"],
}


def record(i: int) -> dict[str, Any]:
    return {"type": "RecordData", "timestamp": 0.5 + i, "point_nb": i, "dummy_mot_01": i / 10}


def sd(payload: bytes | dict[str, Any]) -> StreamData:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return StreamData(typ="sardana", frames=[raw])


# === worker and reducer of the end-to-end tests (0.2 style) ===


class SardanaWorker:
    """Parses each sardana frame; returns what it was."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.name = kwargs["state"].name

    def process_event(self, event: EventData, parameters: Any = None, tick: bool = False) -> Any:
        packet = parse(event.streams[StreamName("sardana")])
        return {"event": event.event_number, "worker": self.name, "type": packet.type,
                "point_nb": getattr(packet, "point_nb", None),
                "serialno": getattr(packet, "serialno", None)}


class SardanaReducer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.records: list[Any] = []
        self.publish: dict[str, Any] = {"records": "[]", "count": 0, "finished": 0}

    def process_result(self, result: ResultData, parameters: Any = None) -> None:
        if result.payload is not None:
            self.records.append(result.payload)
            self.publish["records"] = json.dumps(self.records)
            self.publish["count"] = len(self.records)

    def finish(self, parameters: Any = None) -> None:
        self.publish["finished"] = 1


# === parser ===


def test_parse_each_message_as_0_2_does() -> None:
    desc = parse(sd(DESC))
    assert isinstance(desc, SardanaDataDescription)
    assert (desc.serialno, desc.title) == (20338, DESC["title"])
    assert (desc.model_extra or {})["ref_moveables"] == ["dummy_mot_01"]
    assert desc == SardanaPacket.validate_python(DESC)
    rec = parse(StreamData(typ="sardana", frames=[zmq.Frame(json.dumps(record(3)).encode())]))
    assert isinstance(rec, SardanaRecordData)
    assert (rec.timestamp, rec.model_extra) == (3.5, {"point_nb": 3, "dummy_mot_01": 0.3})
    assert isinstance(parse(sd({"type": "RecordEnd"})), SardanaRecordEnd)
    # what only pydantic's lax path accepts: an int timestamp, NaN, no "type" at all
    lax = parse(sd(b'{"type": "RecordData", "timestamp": 2, "ct": NaN}'))
    assert isinstance(lax, SardanaRecordData) and type(lax.timestamp) is float
    assert lax.timestamp == 2.0 and math.isnan((lax.model_extra or {})["ct"])
    assert isinstance(parse(sd({"timestamp": 1.5, "point_nb": 0})), SardanaRecordData)
    assert isinstance(parse(sd({})), SardanaRecordEnd)


@pytest.mark.parametrize(("data", "message"), [
    (StreamData(typ="STINS", frames=[b"{}"]), "typ 'STINS'"),
    (StreamData(typ="sardana", frames=[]), "0 frames, expected 1"),
    (StreamData(typ="sardana", frames=[b"{}", b"{}"]), "2 frames, expected 1"),
    (sd(b'{"type": "RecordEnd"'), "frame 0 is not valid JSON"),
    (sd(b"\xff\xfe\x00"), "frame 0 is not valid JSON"),
    (sd(b"[1, 2]"), "frame 0 is a JSON list, expected an object"),
    (sd({"type": "RecordStart"}), "field 'type' is 'RecordStart'"),
    (sd({"type": 7}), "field 'type' is 7"),
    (sd({"type": "RecordData", "point_nb": 1}), "field 'timestamp': Field required"),
    (sd({"type": "RecordData", "timestamp": "soon"}), "field 'timestamp'"),
    (sd({"type": "DataDescription", "serialno": 1, "scandir": "/d"}), "field 'title'"),
    (sd({"type": "DataDescription", "serialno": "x", "scandir": "/d", "title": "t"}),
     "field 'serialno'"),
])
def test_malformed_messages_name_the_problem(data: StreamData, message: str) -> None:
    with pytest.raises(SardanaDecodeError) as info:
        parse(data)
    assert message in str(info.value)
    assert isinstance(info.value, DecodeError) and isinstance(info.value, ValueError)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=False), st.text(max_size=8))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
_fields = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["DataDescription", "RecordData", "RecordEnd", "Other"]) | _scalars,
    "timestamp": _scalars, "serialno": _scalars, "scandir": _scalars, "title": _scalars,
    "point_nb": _json, "column_desc": _json,
})


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_fields)
def test_fast_path_returns_what_pydantic_returns(message: dict[str, Any]) -> None:
    """Against 0.2's rule (pydantic validation of the JSON object): same model or an error."""
    raw = json.dumps(message).encode()
    try:
        expected = SardanaPacket.validate_python(json.loads(raw))
    except ValidationError:
        with pytest.raises(SardanaDecodeError):
            parse(sd(raw))
        return
    got = parse(sd(raw))
    assert type(got) is type(expected)
    assert got.model_dump() == expected.model_dump()
    assert got.model_dump_json() == expected.model_dump_json()


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=64) | _json.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_frames_give_a_packet_or_a_decode_error(raw: bytes) -> None:
    try:
        packet = parse(sd(raw))
    except SardanaDecodeError:
        return
    assert isinstance(packet, SardanaDataDescription | SardanaRecordData | SardanaRecordEnd)


# === the HTTP app ===


def test_a_second_asgi_startup_starts_a_fresh_ingester(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dranspose_fast.ingesters import http_sardana

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("INGESTER_STREAMS", '["sardana"]')
    monkeypatch.setenv("INGESTER_URL", f"tcp://127.0.0.1:{free_port()}")
    client = redis.Redis.from_url(redis_url)
    key = Keys.config("ingester", "sardana-ingester")
    seen = []
    for _ in range(2):
        with HttpThread(http_sardana.app) as server:
            ingester = http_sardana.sardana_ingester
            assert ingester is not None and ingester not in seen
            seen.append(ingester)
            wait_for(lambda: client.exists(key), what="the ingester's config")
            answer = httpx.post(server.url + "v1/record_end", json={"type": "RecordEnd"})
            assert answer.status_code == 200
            # no scan runs: the post is dropped and counted
            counters = ingester.counter_values
            wait_for(lambda: counters().discarded_outside_scan == 1)  # noqa: B023 (used now)
        assert http_sardana.sardana_ingester is None
        wait_for(lambda: not client.exists(key), what="the config key to go")
    client.close()


def spawn_http_ingester(ens: Ensemble, stream: str = "sardana", **env: str) -> str:
    port = free_port()
    ens.spawn(f"{stream}-ingester",
              ["http_ingester", "-c", APP, "-n", stream, "-p", str(port)],
              INGESTER_URL=f"tcp://127.0.0.1:{free_port()}", **env)
    return f"http://127.0.0.1:{port}"


DR02_READ_DUMP = """
import json, sys
from dranspose.replay import get_internals
from dranspose.middlewares.sardana import parse
out = []
for msg in get_internals(sys.argv[1]):
    p = parse(msg.streams["sardana"])
    out.append([msg.event_number, p.type, getattr(p, "point_nb", None)])
print(json.dumps(out))
"""



def dumped(path: Path) -> list[list[Any]]:
    """(event, type, point_nb) of every record of our dump, parsed here."""
    return [[msg.event_number, *dumped_packet(msg)] for msg in read_dump(path)]


def test_bad_bodies_are_422_naming_the_field(ens: Ensemble) -> None:
    url = spawn_http_ingester(ens)
    ens.wait("the http ingester", lambda: httpx.get(url + "/docs").status_code == 200)
    r = httpx.post(url + "/v1/record_data", json={"type": "RecordData", "point_nb": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "timestamp"]
    r = httpx.post(url + "/v1/data_desc", json={"serialno": "x", "scandir": "/d", "title": "t"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "serialno"]
    r = httpx.post(url + "/v1/record_end", json={"type": "RecordData"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "type"]
    r = httpx.post(url + "/v1/record_end", content=b"{nope",
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    assert httpx.post(url + "/v1/custom_data", json={"anything": [1, 2]}).status_code == 200
    assert httpx.post(url + "/v1/custom_data", json=[1]).status_code == 422


def post_scan(url: str, n: int, serialno: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.post("/v1/data_desc", json={**DESC, "serialno": serialno}).status_code == 200
        for i in range(n):
            assert http.post("/v1/record_data", json=record(i)).status_code == 200
        assert http.post("/v1/record_end", json={"type": "RecordEnd"}).status_code == 200


def check_scan(ens: Ensemble, n: int, serialno: int, workers: set[str]) -> None:
    progress = ens.wait_finished()
    assert progress["completed_events"] == n + 2, progress
    by_event = records_by_event(ens.published())
    assert sorted(by_event) == list(range(n + 2))
    # the start and end broadcast to every worker, each record to one
    assert {(r["worker"], r["type"], r["serialno"]) for r in by_event[0]} == \
        {(w, "DataDescription", serialno) for w in workers}
    assert {(r["worker"], r["type"]) for r in by_event[n + 1]} == {(w, "RecordEnd")
                                                                  for w in workers}
    for i in range(n):
        (rec,) = by_event[i + 1]
        assert (rec["type"], rec["point_nb"]) == ("RecordData", i)


def test_sardana_scans_end_to_end(ens: Ensemble, tmp_path: Path) -> None:
    dump = tmp_path / "sardana.cbors"
    ens.controller()
    ens.reducer("tests.test_proto_sardana:SardanaReducer")
    url = spawn_http_ingester(ens, DUMP_PATH=str(dump))
    ens.wait("the reducer and the sardana stream",
             lambda: "sardana" in ens.get("/api/v1/streams").json()
             and ens.get("/api/v1/config").json()["reducer"] is not None)
    # As in 0.2 the hook needs no workers: the scan waits for them.
    hook = {"streams": ["sardana", "not_here"], "scan": {"nb_points": 5}}
    answer = ens.post("/api/v1/sardana_hook", json=hook)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json(), str) and len(answer.json()) == 36
    sequence = ens.get("/api/v1/sequence").json()
    assert sequence["sequence"] == ["reserved_start_end", "sardana", "reserved_start_end"]
    assert list(sequence["parts"]["sardana"]["mapping"]) == ["sardana"]
    for name in ("w0", "w1"):
        ens.worker(name, "tests.test_proto_sardana:SardanaWorker")
    ens.wait_ready(["sardana"], ["w0", "w1"])
    answer = ens.post("/api/v1/sardana_hook", json=hook)
    assert answer.status_code == 200, answer.text
    post_scan(url, 5, serialno=1)
    check_scan(ens, 5, 1, {"w0", "w1"})

    # The next scan: a record posted before its data description is dropped (0.2's rule).
    answer = ens.post("/api/v1/sardana_hook", json={"streams": ["sardana"],
                                                    "scan": {"nb_points": 7}})
    assert answer.status_code == 200, answer.text
    assert httpx.post(url + "/v1/record_data", json=record(99)).status_code == 200
    post_scan(url, 7, serialno=2)
    check_scan(ens, 7, 2, {"w0", "w1"})
    # records after the end are dropped until the next scan
    assert httpx.post(url + "/v1/record_data", json=record(100)).status_code == 200
    config = ens.get("/api/v1/config").json()
    (ingester,) = config["ingesters"]
    assert ingester["streams"] == ["sardana"]
    # the dump (both scans, appended) as 0.2 reads it
    expected = [[0, "DataDescription", None], *[[i + 1, "RecordData", i] for i in range(5)],
                [6, "RecordEnd", None], [0, "DataDescription", None],
                *[[i + 1, "RecordData", i] for i in range(7)], [8, "RecordEnd", None]]

    def complete() -> bool:  # the ingester closes (flushes) the dump when it sees the end
        try:
            return dumped(dump) == expected
        except (DumpError, EOFError):  # a record cut short by the write buffer
            return False

    ens.wait("the dump of both scans", complete)
    if dr02_python_or_none() is not None:
        assert run_dr02(DR02_READ_DUMP, dump) == expected
    ens.wait("the dropped posts to be counted", lambda: any(
        i["counters"]["discarded_outside_scan"] >= 2
        for i in ens.get("/api/v1/config").json()["ingesters"]))


DR02_INGEST = """
import asyncio, json, sys
from dranspose.data.sardana import SardanaPacket
from dranspose.event import InternalWorkerMessage
from dranspose.ingester import Dumper
from dranspose.ingesters.http_sardana import HttpSardanaIngester, HttpSardanaSettings

async def main():
    packets = [SardanaPacket.validate_python(p) for p in json.loads(sys.argv[2])]
    ingester = HttpSardanaIngester(HttpSardanaSettings(ingester_streams=["sardana"]))
    gen = ingester.run_source("sardana")
    first = asyncio.ensure_future(gen.__anext__())
    await asyncio.sleep(0.2)  # the generator made its queue
    for packet in packets:
        await ingester.receive(packet)
    dumper = Dumper(sys.argv[1])
    event, item = 0, await first
    while True:
        message = InternalWorkerMessage(event_number=event, streams={"sardana": item.get_bytes()})
        dumper.write_dump(message)
        if json.loads(item.frames[0].bytes)["type"] == "RecordEnd":
            break
        event, item = event + 1, await gen.__anext__()
    dumper.close()

asyncio.run(main())
"""


def test_dranspose_0_2_ingester_dump_reads_here(tmp_path: Path) -> None:
    """0.2's own HttpSardanaIngester (its run_source, its Dumper) makes the frames ours make."""
    from dranspose_fast.ingesters.http_sardana import _frame

    dr02_python()
    posts = [record(99), DESC, *[record(i) for i in range(4)], {"type": "RecordEnd"}]
    dump = tmp_path / "dr02-sardana.cbors"
    run_dr02_raw(DR02_INGEST, dump, json.dumps(posts), timeout=60)
    theirs = list(read_dump(dump))
    assert [m.event_number for m in theirs] == list(range(6))  # record 99 came before the start
    ours = [_frame(SardanaPacket.validate_python(p)) for p in posts[1:]]
    for got, want in zip(theirs, ours, strict=True):
        data = got.streams[StreamName("sardana")]
        assert data.typ == want.typ == "sardana"
        assert data.get_bytes().frames == want.get_bytes().frames
    assert [[m.event_number, *dumped_packet(m)] for m in theirs] == \
        [[0, "DataDescription", None], *[[i + 1, "RecordData", i] for i in range(4)],
         [5, "RecordEnd", None]]


def dumped_packet(msg: Any) -> list[Any]:
    packet = parse(msg.streams[StreamName("sardana")])
    return [packet.type, getattr(packet, "point_nb", None)]
