"""The CLI commands of dranspose 0.2 beyond the single services: ``combined``,
``http_ingester``, and ``ingester -c`` with every built-in class; bad input in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from dranspose_fast import cli
from dranspose_fast.ingesters import BUILTIN_INGESTERS
from dranspose_fast.runtime.redis_messages import Keys
from tests.conftest import RedisServer, free_port, wait_for
from tests.ensemble import ROOT, Ensemble, uniform
from tests.stins_source import StinsSource

UNREACHABLE = "redis://127.0.0.1:1/0"


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dranspose_fast.cli", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=60)


def one_error_line(out: subprocess.CompletedProcess[str], message: str) -> None:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and message in lines[0], out.stderr


# === combined ===


def test_combined_runs_a_scan_in_one_process(ens: Ensemble, source: StinsSource) -> None:
    port, reducer_port = free_port(), free_port()
    ens.spawn("combined", ["combined", "--port", str(port), "--reducer-port", str(reducer_port),
                           "-u", source.url,
                           "--ingester-url", f"tcp://127.0.0.1:{free_port()}",
                           "--reducer-url", f"tcp://127.0.0.1:{free_port()}"],
              WORKER_CLASS="tests.e2e_classes:RecordWorker",
              REDUCER_CLASS="tests.e2e_classes:RecordReducer")
    ens.controller_url = f"http://127.0.0.1:{port}"
    ens.reducer_url = f"http://127.0.0.1:{reducer_port}"
    ens.wait_ready(["eiger"], ["worker1", "worker2"])
    config = ens.get("/api/v1/config").json()
    assert [i["name"] for i in config["ingesters"]] == ["eiger-ingester"]
    assert httpx.get(ens.reducer_url + "/api/v1/status").json() is True
    ens.sequence(uniform(["eiger"], 6))
    source.send_series(6)
    assert ens.wait_finished()["finished"]
    events = Counter(r["event"] for r in ens.published()["records"])
    assert events == Counter({0: 2, 7: 2, **{i: 1 for i in range(1, 7)}})
    # the ens fixture stops it with SIGTERM and requires exit code 0


def test_combined_defaults_are_0_2s() -> None:
    args = cli.build_parser().parse_args(["combined"])
    assert (args.port, args.reducer_port, args.upstream_url) == (5000, 5001,
                                                                 "tcp://localhost:9999")
    args = cli.build_parser().parse_args(["http_ingester", "-c", "m:app", "-n", "s"])
    assert (args.host, args.port) == ("127.0.0.1", 5000)


# === http_ingester ===


def test_http_ingester_serves_the_app_for_its_stream(ens: Ensemble, redis_url: str) -> None:
    port = free_port()
    ens.spawn("http", ["http_ingester", "-c", "dranspose_fast.ingesters.http_sardana:app",
                       "-n", "mystream", "-p", str(port)],
              INGESTER_URL=f"tcp://127.0.0.1:{free_port()}")
    client = redis.Redis.from_url(redis_url)
    key = Keys.config("ingester", "mystream-ingester")
    ens.wait("the ingester's config", lambda: bool(client.exists(key)))
    state = json.loads(client.get(key) or b"{}")
    assert state["streams"] == ["mystream"]  # -n exported as INGESTER_STREAMS
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/record_end", json={"type": "RecordEnd"})
    assert answer.status_code == 200
    assert ens.stop("http") == 0
    assert not client.exists(key)  # the lifespan closed the ingester
    client.close()


@pytest.mark.parametrize(("args", "env", "message"), [
    (["http_ingester", "-c", "no_such_module:app", "-n", "s"], {}, "cannot load the ingester app"),
    (["http_ingester", "-c", "dranspose_fast.ingesters.http_sardana:nope", "-n", "s"], {},
     'Attribute "nope" not found'),
    (["http_ingester", "-c", "dranspose_fast.ingesters.http_sardana:app", "-n", "s"],
     {"REDIS_URL": UNREACHABLE}, "cannot reach Redis at redis://127.0.0.1:1/0"),
    (["ingester", "-c", "HttpSardanaIngester", "-n", "s"], {"REDIS_URL": UNREACHABLE},
     "cannot reach Redis"),
    (["ingester", "-c", "ZmqPullSingleIngester", "-n", "s"], {}, "have no upstream"),
    (["ingester", "-c", "no.such:Ingester", "-n", "s"], {}, "cannot import module 'no.such'"),
    (["combined"], {"REDIS_URL": UNREACHABLE}, "cannot reach Redis"),
    (["controller"], {"REDIS_URL": UNREACHABLE}, "cannot reach Redis"),
])
def test_bad_input_is_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    one_error_line(run_cli(*args, **env), message)


def test_a_port_in_use_is_one_line(redis_url: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("ingester", "-c", "HttpSardanaIngester", "-n", "s", "--url",
                      f"tcp://127.0.0.1:{port}", REDIS_URL=redis_url)
    one_error_line(out, "cannot bind")


# === ingester -c NAME: every built-in class ===


def _module_of(name: str) -> str:
    return "dranspose_fast.ingesters." + BUILTIN_INGESTERS[name].split(":")[0]


@pytest.fixture(scope="module")
def running_ingesters(tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[str, dict[str, subprocess.Popen[bytes]], Path]]:
    """Every built-in ingester whose module exists, as ``dranspose-fast ingester`` processes."""
    tmp = tmp_path_factory.mktemp("ingesters")
    server = RedisServer(tmp)
    server.start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": server.url,
           "DFAST_CONFIG_INTERVAL": "0.2", "BUILD_META_FILE": str(tmp / "none.json")}
    for name in BUILTIN_INGESTERS:
        if importlib.util.find_spec(_module_of(name)) is None:
            continue
        with open(tmp / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "dranspose_fast.cli", "ingester", "-c", name,
                 "-n", f"s-{name.lower()}", "-u", f"tcp://127.0.0.1:{free_port()}",
                 "--url", f"tcp://127.0.0.1:{free_port()}"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield server.url, procs, tmp
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.stop()


@pytest.mark.parametrize("name", sorted(BUILTIN_INGESTERS))
def test_ingester_command_accepts_every_builtin_class(
        name: str, running_ingesters: tuple[str, dict[str, subprocess.Popen[bytes]], Path]
) -> None:
    if importlib.util.find_spec(_module_of(name)) is None:
        pytest.skip(f"{_module_of(name)} is not written yet")
    url, procs, tmp = running_ingesters
    proc = procs[name]
    client = redis.Redis.from_url(url)
    key = Keys.config("ingester", f"s-{name.lower()}-ingester")

    def registered() -> bool:
        assert proc.poll() is None, (tmp / f"{name}.log").read_text()
        return bool(client.exists(key))

    wait_for(registered, timeout=30, what=f"{name} to register")
    assert json.loads(client.get(key) or b"{}")["streams"] == [f"s-{name.lower()}"]
    client.close()


@pytest.mark.parametrize("name", sorted(BUILTIN_INGESTERS))
def test_ingester_flags_reach_the_settings(name: str, redis_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec(_module_of(name)) is None:
        pytest.skip(f"{_module_of(name)} is not written yet")
    monkeypatch.setenv("REDIS_URL", redis_url)
    upstream = f"tcp://127.0.0.1:{free_port()}"
    router = f"tcp://127.0.0.1:{free_port()}"
    args = cli.build_parser().parse_args(
        ["ingester", "-c", name, "-n", "s1", "-u", upstream, "--url", router])
    ingester = cli.build_ingester(args)
    try:
        settings = ingester._ingester_settings
        assert type(ingester).__name__ == name
        assert settings.ingester_streams == ["s1"]
        assert str(settings.ingester_url) == router
        field = "upstream_url"
        if field in type(settings).model_fields:
            assert str(getattr(settings, field)).rstrip("/") == upstream
    finally:
        ingester.close()


# === 0.2's module API: one function per command ===


def test_command_functions_take_0_2_namespaces(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    monkeypatch.setenv("REDIS_URL", UNREACHABLE)
    monkeypatch.delenv("INGESTER_STREAMS", raising=False)  # http_ingester exports it
    args = cli.create_parser().parse_args(["combined"])
    with pytest.raises(SystemExit) as info:
        cli.combined(args)
    assert info.value.code == 2
    assert "combined: error: cannot reach Redis" in capsys.readouterr().err
    # a namespace as 0.2's parser makes it: flags this CLI added take their defaults
    with pytest.raises(SystemExit) as info:
        cli.http_ingester(argparse.Namespace(ingesterapp="no_such_module:app", name="s",
                                             host=None, port=None))
    assert info.value.code == 2
    assert "cannot load the ingester app" in capsys.readouterr().err
    for name in ("controller", "worker", "ingester", "reducer", "debugworker", "replay", "run"):
        assert callable(getattr(cli, name))
