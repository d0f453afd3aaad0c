"""The HTTP APIs let in only who belongs (issue 11, item 4).

The controller's app is served by uvicorn on a real socket with a real Redis (so
``Content-Length``, chunked bodies and ``Origin`` are what a client sends): a cross-origin
POST is refused before its handler runs and the same POST without ``Origin`` passes;
oversized bodies get 413, bytes that are not JSON 400; a token, when set, is asked for;
``dump_prefix`` stays in the dump root. The reducer's and debug worker's apps follow the
same rules; settings that make no sense stop a component in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dranspose_fast.api.server import HttpThread
from dranspose_fast.controller.routes import create_app
from dranspose_fast.debug_worker import DebugWorker, DebugWorkerSettings
from dranspose_fast.debug_worker import create_app as debug_app
from dranspose_fast.reducer import Reducer
from dranspose_fast.reducer import create_app as reducer_app
from dranspose_fast.runtime.settings import ReducerSettings, RestSettings
from tests.conftest import free_port
from tests.controller_sim import settings_for
from tests.ensemble import ROOT

TOKEN = "s3cret-token"
EVIL = "http://evil.example"
Serve = Callable[..., str]


@pytest.fixture
def serve(redis_url: str, tmp_path: Path) -> Iterator[Serve]:
    """Serve a controller (its own, from settings) with ``RestSettings(**rest)``; its URL."""
    servers: list[HttpThread] = []

    def start(dump_root: Path | None = None, **rest: Any) -> str:
        extra = {"dfast_dump_root": dump_root} if dump_root is not None else {}
        app = create_app(None, settings_for(redis_url, **extra), rest=RestSettings(**rest))
        servers.append(HttpThread(app, port=free_port()).start())
        return servers[-1].url.rstrip("/")

    yield start
    for server in servers:
        server.stop()


def param(url: str, name: str, **kw: Any) -> bytes | None:
    r = httpx.get(f"{url}/api/v1/parameter/{name}", **kw)
    return r.content if r.status_code == 200 else None


# === origins ===


def test_cross_origin_simple_posts_are_refused_before_their_handler(serve: Serve) -> None:
    url = serve()
    form = {"content-type": "text/plain"}  # what an HTML form or a no-cors fetch sends
    r = httpx.post(f"{url}/api/v1/parameter/dump_prefix", content=b"scan1-",
                   headers={**form, "Origin": EVIL})
    assert r.status_code == 403
    assert r.json()["detail"] == (f"cross-origin request from {EVIL} refused: the origin is "
                                  "not in DFAST_REST_CORS_ORIGINS")
    assert param(url, "dump_prefix") is None  # the handler never ran
    r = httpx.post(f"{url}/api/v1/stop", headers={**form, "Origin": EVIL})
    assert r.status_code == 403
    # the same requests without Origin (scripts, Sardana, 0.2 clients) and from the page
    # itself pass
    assert httpx.post(f"{url}/api/v1/parameter/dump_prefix", content=b"scan1-",
                      headers=form).status_code == 200
    assert param(url, "dump_prefix") == b"scan1-"
    assert httpx.post(f"{url}/api/v1/stop", headers={"Origin": url}).status_code == 200
    # reads from anywhere answer, without CORS headers: the page cannot read them
    r = httpx.get(f"{url}/api/v1/progress", headers={"Origin": EVIL})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_listed_origins_get_cors_without_credentials(serve: Serve) -> None:
    viewer = "https://viewer.example"
    url = serve(dfast_rest_cors_origins=f"{viewer}, http://other.example:8080")
    r = httpx.post(f"{url}/api/v1/stop", headers={"Origin": viewer})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == viewer
    assert "access-control-allow-credentials" not in r.headers
    pre = httpx.options(f"{url}/api/v1/parameter/x", headers={
        "Origin": viewer, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200 and "authorization" in pre.headers[
        "access-control-allow-headers"].lower()
    assert httpx.post(f"{url}/api/v1/stop", headers={"Origin": EVIL}).status_code == 403


# === the token ===


def test_a_token_guards_every_mutating_request(serve: Serve) -> None:
    url = serve(dfast_rest_token=TOKEN)
    r = httpx.post(f"{url}/api/v1/parameter/roi", content=b"1")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["detail"] == "a bearer token is required (Authorization: Bearer <token>)"
    r = httpx.post(f"{url}/api/v1/parameter/roi", content=b"1",
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["detail"] == "the bearer token is not valid"
    assert httpx.post(f"{url}/api/v1/stop", headers={"Authorization": "Basic " + TOKEN}
                      ).status_code == 401
    assert param(url, "roi") is None
    r = httpx.post(f"{url}/api/v1/parameter/roi", content=b"1",
                   headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 200 and param(url, "roi") == b"1"
    assert httpx.get(f"{url}/api/v1/progress").status_code == 200  # reads stay open


def test_auth_all_leaves_only_the_page_and_the_docs_open(serve: Serve, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")  # as a Kubernetes secret mounts it
    url = serve(dfast_rest_token_file=secret, dfast_rest_auth="all")
    for path in ("/api/v1/progress", "/api/v1/config", "/api/v1/parameter/x", "/metrics"):
        assert httpx.get(url + path).status_code == 401, path
    for path in ("/", "/static/app.js", "/docs", "/openapi.json"):
        assert httpx.get(url + path).status_code == 200, path
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{url}/api/v1/progress", headers=auth).status_code == 200


@pytest.mark.parametrize("env, why", [
    ({"DFAST_REST_AUTH": "all"}, "DFAST_REST_AUTH=all needs DFAST_REST_TOKEN"),
    ({"DFAST_REST_TOKEN": "a", "DFAST_REST_TOKEN_FILE": "/etc/hostname"}, "not both"),
    ({"DFAST_REST_TOKEN_FILE": "/nonexistent/token"}, "cannot read it"),
    ({"DFAST_REST_TOKEN": "  "}, "DFAST_REST_TOKEN is empty"),
    ({"DFAST_REST_CORS_ORIGINS": "evil.example"}, "is not an origin"),
    ({"DFAST_REST_MAX_BODY": "lots"}, "dfast_rest_max_body"),
    ({"DFAST_REST_BODY_LIMITS": '{"api/v1/sequence": 10}'}, "is not a path"),
])
def test_settings_that_make_no_sense_are_refused(monkeypatch: pytest.MonkeyPatch,
                                                 env: dict[str, str], why: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=why):
        RestSettings()


def test_the_controller_stops_in_one_line_on_bad_settings(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "DFAST_REST_AUTH": "all",
           "PYTHONPATH": str(ROOT)}
    env.pop("DFAST_REST_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "dranspose_fast.cli", "controller",
                           "--port", str(free_port())],
                          env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DFAST_REST_AUTH=all needs DFAST_REST_TOKEN" in lines[0]


# === bodies ===


def test_oversized_bodies_get_413(serve: Serve) -> None:
    url = serve(dfast_rest_max_body="1KiB",
                dfast_rest_body_limits={"/api/v1/parameter/{name}": 4096})
    r = httpx.post(f"{url}/api/v1/stop", content=b"x" * 2048)
    assert r.status_code == 413 and "limit of 1024 bytes" in r.json()["detail"]
    r = httpx.post(f"{url}/api/v1/parameter/mask", content=b"x" * 8192)
    assert r.status_code == 413 and "limit of 4096 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(8):
            yield b"y" * 1024

    r = httpx.post(f"{url}/api/v1/parameter/mask", content=chunks())
    assert r.status_code == 413 and param(url, "mask") is None
    assert httpx.post(f"{url}/api/v1/parameter/mask", content=b"z" * 4096).status_code == 200
    assert param(url, "mask") == b"z" * 4096


def test_default_limits_per_endpoint() -> None:
    from fastapi import FastAPI

    from dranspose_fast.api.guard import RestGuard
    from dranspose_fast.controller.routes import LARGE_BODIES

    guard = RestGuard(FastAPI(), RestSettings(), large=LARGE_BODIES)
    for path in ("/api/v1/sequence", "/api/v1/sequence/append", "/api/v1/mapping",
                 "/api/v1/parameter/mask"):
        assert guard.limit(path) == 512 << 20, path
    for path in ("/api/v1/stop", "/api/v1/sardana_hook", "/api/v1/sequence/close",
                 "/api/v1/parameter/a/b"):
        assert guard.limit(path) == 1 << 20, path


@pytest.mark.parametrize("path", ["/api/v1/sequence", "/api/v1/sequence/append",
                                  "/api/v1/mapping", "/api/v1/sardana_hook"])
@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain"])
def test_random_bytes_are_400_with_the_reason(serve: Serve, path: str,
                                              content_type: str | None) -> None:
    url = serve()
    headers = {"content-type": content_type} if content_type else {}
    r = httpx.post(url + path, content=os.urandom(256), headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(("the body is not JSON (not even UTF-8 text)",
                                          "the body cannot be read: UnicodeDecodeError"))


def test_binary_that_json_reads_as_utf16_is_400(serve: Serve) -> None:
    """json.loads takes a NUL in the first bytes for UTF-16; the body is still not text."""
    url = serve()
    body = b"\x00A" + bytes(range(0x80, 0x90))
    r = httpx.post(url + "/api/v1/sequence/append", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("the body is not JSON (not even UTF-8 text)")


@settings(deadline=None, max_examples=40,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300))
def test_no_body_makes_a_server_error(body: bytes, redis_url: str) -> None:
    url = _shared_controller(redis_url)
    for path in ("/api/v1/sequence", "/api/v1/sequence/append", "/api/v1/parameter/x"):
        r = httpx.post(url + path, content=body, headers={"content-type": "application/json"})
        assert r.status_code < 500, (path, body, r.text)


_shared: dict[str, tuple[str, HttpThread]] = {}


def _shared_controller(redis_url: str) -> str:
    """One controller for every hypothesis example of a test (stopped by ``_stop_shared``)."""
    if redis_url not in _shared:
        app = create_app(None, settings_for(redis_url), rest=RestSettings())
        server = HttpThread(app, port=free_port()).start()
        _shared[redis_url] = (server.url.rstrip("/"), server)
    return _shared[redis_url][0]


@pytest.fixture(autouse=True)
def _stop_shared() -> Iterator[None]:
    yield
    for _url, server in _shared.values():
        server.stop()
    _shared.clear()


# === dump_prefix ===


def test_dump_prefix_stays_in_the_dump_root(serve: Serve, tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    (root / "beamtime").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)  # a link out of the root
    url = serve(dump_root=root)
    for prefix in ("/etc/dfast-", f"{root}/../x-", f"{root}/out/x-", "../../x-"):
        r = httpx.post(f"{url}/api/v1/parameter/dump_prefix", content=prefix.encode())
        assert r.status_code == 400, prefix
        assert "outside the dump root" in r.json()["detail"] and "DFAST_DUMP_ROOT" in \
            r.json()["detail"]
    assert param(url, "dump_prefix") is None
    for prefix in (f"{root}/beamtime/scan1-", f"{root}/", ""):
        r = httpx.post(f"{url}/api/v1/parameter/dump_prefix", content=prefix.encode())
        assert r.status_code == 200, (prefix, r.text)


def test_without_a_root_the_current_directory_is_it(serve: Serve, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DFAST_DUMP_ROOT", raising=False)  # tests/conftest.py sets one
    url = serve()  # the controller's directory: this process's
    assert httpx.post(f"{url}/api/v1/parameter/dump_prefix",
                      content=f"{tmp_path}/x-".encode()).status_code == 400
    assert httpx.post(f"{url}/api/v1/parameter/dump_prefix",
                      content=b"dumps/x-").status_code == 200


# === the reducer's and the debug worker's apps ===


@pytest.fixture
def reducer(redis_url: str) -> Iterator[Reducer]:
    r = Reducer(ReducerSettings(redis_url=redis_url, build_meta_file=None,
                                reducer_url=f"tcp://127.0.0.1:{free_port()}"))
    yield r
    r.close()


def test_the_reducer_app_reads_freely_unless_told_otherwise(reducer: Reducer) -> None:
    open_ = HttpThread(reducer_app(reducer, RestSettings(dfast_rest_token=TOKEN)),
                       port=free_port()).start()
    closed = HttpThread(reducer_app(reducer, RestSettings(dfast_rest_token=TOKEN,
                                                          dfast_rest_auth="all")),
                        port=free_port()).start()
    try:
        assert httpx.get(open_.url).status_code == 200  # the h5dict root
        # the select POST only reads: no token, any origin, but a body limit
        assert httpx.post(open_.url + "datasets/nope/value", json={},
                          headers={"Origin": EVIL}).status_code == 404
        assert httpx.post(open_.url + "datasets/nope/value",
                          content=b"{}" + b" " * (2 << 20)).status_code == 413
        assert httpx.get(closed.url).status_code == 401
        assert httpx.get(closed.url + "metrics").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(closed.url, headers=auth).status_code == 200
    finally:
        open_.stop()
        closed.stop()


def test_the_debug_worker_app_asks_for_the_token_with_auth_all(redis_url: str) -> None:
    worker = DebugWorker(DebugWorkerSettings(redis_url=redis_url, build_meta_file=None))
    server = HttpThread(debug_app(worker, RestSettings(dfast_rest_token=TOKEN,
                                                       dfast_rest_auth="all")),
                        port=free_port()).start()
    try:
        assert httpx.get(server.url + "api/v1/last_events").status_code == 401
        r = httpx.get(server.url + "api/v1/last_events",
                      headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x.pickle"
    finally:
        server.stop()
        worker.close()
