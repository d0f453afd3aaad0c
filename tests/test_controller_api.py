"""The controller's REST API (FastAPI TestClient, and uvicorn on a free port) on a real Redis."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dranspose_fast.controller import Controller, ControllerSettings
from dranspose_fast.controller.routes import create_app
from dranspose_fast.runtime.redis_messages import Keys
from tests.conftest import free_port, wait_for

# the controller fixtures are shared with the controller's own tests
from tests.controller_sim import (  # noqa: F401 (fixtures)
    Sim,
    ctrl,
    drive,
    settings,
    settings_for,
    started_sim,
)


@pytest.fixture
def client(ctrl: Controller) -> Iterator[TestClient]:
    with TestClient(create_app(ctrl)) as c:
        yield c


@pytest.fixture
def sim(redis_url: str) -> Iterator[Sim]:
    s = started_sim(redis_url, "ing", ["eiger", "orca"])
    try:
        yield s
    finally:
        s.stop()


def vw(c: int | None, tags: list[str] | None = None) -> dict[str, Any]:
    return {"tags": tags or ["generic"], "constraint": c}


PARTS = {"main": {"eiger": [[vw(1)], [vw(2)], None], "orca": [[vw(1)], [], [vw(3)]]}}


# === sequence upload, read-back and validation ===


def test_sequence_upload_and_read_back(client: TestClient, sim: Sim) -> None:
    r = client.post("/api/v1/sequence", json={"parts": PARTS, "sequence": ["main", "main"]})
    assert r.status_code == 200, r.text
    uid = r.json()
    assert isinstance(uid, str) and sim.updates()[-1].mapping_uuid.hex == uid.replace("-", "")
    back = client.get("/api/v1/sequence").json()
    assert back == client.get("/api/v1/mapping").json()
    assert back["sequence"] == ["reserved_start_end", "main", "main", "reserved_start_end"]
    assert back["parts"]["main"] == {"mapping": PARTS["main"]}
    wrap = back["parts"]["reserved_start_end"]["mapping"]
    assert wrap == {"eiger": [[vw(None)]], "orca": [[vw(None)]]}
    p = client.get("/api/v1/progress").json()
    assert p == {"last_assigned": 0, "completed_events": 0, "total_events": 8, "finished": False}


def test_sequence_without_wrap_and_the_deprecated_mapping(client: TestClient, sim: Sim) -> None:
    r = client.post("/api/v1/sequence?all_wrap=false", json={"parts": PARTS,
                                                              "sequence": ["main"]})
    assert r.status_code == 200
    assert client.get("/api/v1/progress").json()["total_events"] == 3
    r = client.post("/api/v1/mapping", json=PARTS["main"])
    assert r.status_code == 200
    back = client.get("/api/v1/sequence").json()
    assert back["sequence"] == ["reserved_start_end", "main", "reserved_start_end"]
    assert client.get("/api/v1/progress").json()["total_events"] == 5


def test_malformed_bodies_are_422_with_the_field(client: TestClient, sim: Sim) -> None:
    r = client.post("/api/v1/sequence", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.post("/api/v1/sequence", json={"parts": PARTS, "sequence": "main"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "sequence"]
    r = client.post("/api/v1/sequence", json={"sequence": ["main"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "parts"]
    r = client.post("/api/v1/mapping", json={"eiger": "x"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "eiger"]


def test_invalid_maps_are_400_with_the_reason(client: TestClient, sim: Sim) -> None:
    bad = {"main": {"eiger": [[vw(1)], [vw(2)]], "orca": [[vw(1)]]}}
    r = client.post("/api/v1/sequence", json={"parts": bad, "sequence": ["main"]})
    assert r.status_code == 400 and "unequal lengths" in r.json()["detail"]
    r = client.post("/api/v1/sequence", json={"parts": PARTS, "sequence": ["nope"]})
    assert r.status_code == 400 and "unknown part 'nope'" in r.json()["detail"]
    cell = {"main": {"eiger": [[{"tags": ["generic"], "constraint": -1}]]}}
    r = client.post("/api/v1/sequence", json={"parts": cell, "sequence": ["main"]})
    assert r.status_code == 400 and "event 0" in r.json()["detail"]
    assert client.get("/api/v1/sequence").json() == {"parts": {}, "sequence": []}


def test_unavailable_streams_and_too_few_workers(client: TestClient, sim: Sim) -> None:
    parts = {"main": {"eiger": [[vw(1)]], "pilatus": [[vw(1)]]}}
    r = client.post("/api/v1/sequence", json={"parts": parts, "sequence": ["main"]})
    assert r.status_code == 400 and r.json()["detail"] == "streams {'pilatus'} not available"
    wide = {"main": {"eiger": [[vw(1), vw(2), vw(3)]]}}
    r = client.post("/api/v1/sequence", json={"parts": wide, "sequence": ["main"]})
    assert r.status_code == 400
    assert r.json()["detail"] == "only 2 workers available, but 3 required"
    assert client.get("/api/v1/streams").json() == ["eiger", "orca"]


def test_sardana_hook(client: TestClient, sim: Sim) -> None:
    assert client.post("/api/v1/sardana_hook", json={"streams": ["eiger"]}).json() == \
        "no scan info"
    assert client.post("/api/v1/sardana_hook", json={"streams": ["eiger"], "scan": {}}).json() \
        == "no nb_points in scan"
    assert client.post("/api/v1/sardana_hook", json={"scan": {"nb_points": 3}}).json() == \
        "streams required"
    r = client.post("/api/v1/sardana_hook",
                    json={"streams": ["eiger", "unknown"], "scan": {"nb_points": 5}})
    assert r.status_code == 200
    back = client.get("/api/v1/sequence").json()
    assert back["sequence"] == ["reserved_start_end", "sardana", "reserved_start_end"]
    assert list(back["parts"]["sardana"]["mapping"]) == ["eiger"]
    assert client.get("/api/v1/progress").json()["total_events"] == 7


# === reactive scans, stop ===


def test_reactive_scan_over_rest(client: TestClient, sim: Sim) -> None:
    body = {"parts": {"p": {"eiger": [[vw(0)], [vw(1)]]}}, "sequence": []}
    uid = client.post("/api/v1/sequence?open=true", json=body).json()
    assert client.get("/api/v1/progress").json()["total_events"] is None
    r = client.post("/api/v1/sequence/append", json={"sequence": ["p", "p"]})
    assert r.status_code == 200
    assert r.json() == {"mapping_uuid": uid, "open": True, "known_events": 5,
                        "total_events": None}
    r = client.post("/api/v1/sequence/append",
                    json={"parts": {"q": {"eiger": [[vw(0)]]}}, "sequence": ["q"]})
    assert r.json()["known_events"] == 6
    r = client.post("/api/v1/sequence/append", json={"sequence": ["zz"]})
    assert r.status_code == 400 and "unknown parts ['zz']" in r.json()["detail"]
    r = client.post("/api/v1/sequence/append", json={"sequence": "p"})
    assert r.status_code == 422
    r = client.post("/api/v1/sequence/close")
    assert r.json()["total_events"] == 7 and not r.json()["open"]
    assert client.get("/api/v1/progress").json()["total_events"] == 7
    r = client.post("/api/v1/sequence/append", json={"sequence": ["p"]})
    assert r.status_code == 409
    sim.credit(uid, "w0", 3)
    sim.credit(uid, "w1", 3)
    drive(sim, uid, ["eiger"], 7)
    got = sim.received(uid, ["eiger"])
    for w, evs in got.items():
        sim.credit(uid, w, 0, processed=len(evs), results=0)
    wait_for(lambda: client.get("/api/v1/progress").json()["finished"], what="finish")
    assert client.get("/api/v1/progress").json() == {
        "last_assigned": 7, "completed_events": 7, "total_events": 7, "finished": True}
    assert client.post("/api/v1/sequence/close").status_code == 409


def test_stop(client: TestClient, sim: Sim) -> None:
    assert client.post("/api/v1/stop").status_code == 200  # no scan: nothing to do
    client.post("/api/v1/sequence", json={"parts": PARTS, "sequence": ["main"] * 10})
    assert client.post("/api/v1/stop").status_code == 200
    st = client.get("/api/v1/status").json()
    assert st["finished"] and st["reason"] == "stopped"
    assert sim.updates()[-1].reason == "stopped"


# === parameters ===


def test_parameter_round_trip(client: TestClient, sim: Sim) -> None:
    assert client.get("/api/v1/parameter/roi").status_code == 404
    blob = bytes(range(256)) * 4
    r = client.post("/api/v1/parameter/roi", content=blob)
    assert r.status_code == 200
    h = r.json()
    assert sim.updates()[-1].target_parameters_hash == h and len(h) == 64
    g = client.get("/api/v1/parameter/roi")
    assert g.content == blob and g.headers["content-type"] == "application/x.bytes"
    h2 = client.post("/api/v1/parameter/other", content=b"1").json()
    assert h2 != h
    descs = client.get("/api/v1/parameters").json()
    assert descs == [{"name": "dump_prefix", "description": "Prefix to dump ingester values",
                      "dtype": "str", "default": ""}]
    sim.r.set(Keys.description("zeta"), json.dumps(
        {"name": "zeta", "dtype": "float", "default": 1.5, "description": None}))
    sim.r.set(Keys.description("alpha"), json.dumps({"name": "alpha", "dtype": "bool"}))
    names = [d["name"] for d in client.get("/api/v1/parameters").json()]
    assert names == ["alpha", "dump_prefix", "zeta"]
    wait_for(lambda: client.get("/api/v1/parameter/zeta").content == b"1.5", what="default")
    assert client.get("/api/v1/parameter/alpha").content == b"False"
    # a value that is none of its described type is refused, naming the type and the value
    for name, bad, words in [("zeta", b"fast", "(float) is 'fast', not a number"),
                             ("alpha", b"yes", "(bool) is 'yes', not True or False"),
                             ("dump_prefix", b"\xff", "(str) is not UTF-8 text")]:
        answer = client.post(f"/api/v1/parameter/{name}", content=bad)
        assert answer.status_code == 400 and words in answer.json()["detail"], answer.text
    assert client.get("/api/v1/parameter/zeta").content == b"1.5"  # unchanged
    assert client.post("/api/v1/parameter/zeta", content=b"2e-3").status_code == 200
    assert client.post("/api/v1/parameter/undescribed", content=b"\xff").status_code == 200


# === status, config, load, logs ===


def test_status_config_and_load(client: TestClient, sim: Sim) -> None:
    assert client.get("/api/v1/status").json()["mapping_uuid"] is None
    assert client.get("/api/v1/load").json() == {}
    cfg = wait_for(lambda: (c := client.get("/api/v1/config").json())["workers"] and c,
                   what="the simulated workers' configs")  # slow on a loaded machine
    assert sorted(w["name"] for w in cfg["workers"]) == ["w0", "w1"]
    assert cfg["ingesters"][0]["streams"] == ["eiger", "orca"]
    assert cfg["reducer"]["name"] == "reducer"
    # extra fields a component publishes (its counters) are kept and summed up in /status
    sim.extra["ing"] = {"counters": {"dropped_frames": 3, "errors": 1}, "note": "x"}
    sim.publish()
    wait_for(lambda: "counters" in client.get("/api/v1/config").json()["ingesters"][0],
             what="extra fields")
    uid = client.post("/api/v1/sequence", json={"parts": PARTS, "sequence": ["main"]}).json()
    sim.credit(uid, "w0", 5)
    sim.credit(uid, "w1", 5)
    drive(sim, uid, ["eiger", "orca"], 5)
    st = client.get("/api/v1/status").json()
    assert st["components"]["ingester:ing"]["counters.dropped_frames"] == 3
    assert set(st["workers"]) == {"w0", "w1"}
    assert st["workers"]["w0"]["deliveries"] == len(sim.received(uid, ["eiger", "orca"])["w0"])
    assert [e["event"] for e in st["recent_events"]] == list(range(5))
    assert {b["constraint"] for b in st["recent_bindings"]} == {1, 2, 3}
    load = client.get("/api/v1/load?intervals=1&intervals=5&scan=true").json()
    assert set(load["w0"]["intervals"]) == {"1", "5", "scan"}
    assert load["w0"]["intervals"]["scan"]["events"] == st["workers"]["w0"]["processed"]
    assert "scan" not in client.get("/api/v1/load?scan=false").json()["w0"]["intervals"]


def test_logs_and_log_stream(client: TestClient, sim: Sim) -> None:
    parts = {"main": {"nostream": [[vw(1)]]}}
    client.post("/api/v1/sequence", json={"parts": parts, "sequence": ["main"]})
    logs = client.get("/api/v1/logs?level=WARNING").json()
    assert any("not available" in e["msg"] and e["levelname"] == "WARNING" for e in logs)
    assert all(e["levelname"] in ("WARNING", "ERROR", "CRITICAL") for e in logs)
    assert client.get("/api/v1/logs?level=bogus").status_code == 400

    def later() -> None:
        time.sleep(0.3)
        logging.getLogger("dranspose_fast.controller").warning("streamed line")

    threading.Thread(target=later).start()
    lines = []
    with client.stream("GET", "/api/v1/log_stream?max_seconds=1.5") as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        for line in r.iter_lines():
            lines.append(json.loads(line))
    assert any(e["msg"] == "streamed line" for e in lines)


def test_openapi_and_cors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/api/v1/sequence", "/api/v1/sequence/append", "/api/v1/sequence/close",
                 "/api/v1/parameter/{name}", "/api/v1/progress", "/api/v1/status",
                 "/api/v1/load", "/api/v1/log_stream", "/api/v1/sardana_hook"):
        assert path in doc["paths"]
    # no cross-origin page is allowed unless configured (DFAST_REST_CORS_ORIGINS)
    r = client.get("/api/v1/progress", headers={"Origin": "http://viewer.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_origin_allowed_when_configured(ctrl: Controller) -> None:
    from dranspose_fast.runtime.settings import RestSettings

    rest = RestSettings(dfast_rest_cors_origins="http://viewer.example")
    with TestClient(create_app(ctrl, rest=rest)) as c:
        r = c.get("/api/v1/progress", headers={"Origin": "http://viewer.example"})
        assert r.headers["access-control-allow-origin"] == "http://viewer.example"


# === served by uvicorn, owning its controller ===


def test_uvicorn_app_owns_its_controller(settings: ControllerSettings, redis_url: str) -> None:
    port = free_port()
    app: FastAPI = create_app(None, settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    r = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: server.started, what="uvicorn start")
        answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/progress", timeout=5)
        assert answer.json()["finished"] is False
        assert r.get(Keys.LOCK) is not None
        httpx.post(f"http://127.0.0.1:{port}/api/v1/parameter/x", content=b"1", timeout=5)
        assert r.keys("dfast:parameter:x:*")
    finally:
        server.should_exit = True
        thread.join(10)
    assert r.get(Keys.LOCK) is None and not r.keys("dfast:parameter:*")


def test_module_level_app_is_lazy() -> None:
    import dranspose_fast.controller as controller

    app = controller.app
    assert isinstance(app, FastAPI) and app.state.ctrl is None  # nothing started on import
    assert controller.app is app


def test_uvicorn_process_stops_cleanly_on_sigterm(redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "DFAST_LOCK_TTL": "2",
           "BUILD_META_FILE": "/nonexistent"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "dranspose_fast.controller:app", "--host",
         "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=Path(__file__).parent.parent)
    r = redis.Redis.from_url(redis_url)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/v1/progress").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=20, what="controller process")
        assert r.get(Keys.LOCK) is not None
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(15) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert r.get(Keys.LOCK) is None and not r.exists(Keys.UPDATES)
