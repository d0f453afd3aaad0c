"""Bind apart from advertise (issue 11, item 1): ``INGESTER_BIND`` and ``REDUCER_BIND``.

A component's URL is what peers are told; the bind setting is where it listens.  Unset, a
loopback URL binds its own host and any other URL is refused at start, in one line naming the
setting.  Checked on the settings alone, on real sockets (the kernel's table of listening
sockets, ``/proc/net/tcp``), through the command line, and for ``local``, whose every listening
socket stays on loopback even when the shell sets the bind settings to every interface.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import Url

from dranspose_fast.ingesters.zmqpull_single import ZmqPullSingleIngester, ZmqPullSingleSettings
from dranspose_fast.reducer import Reducer
from dranspose_fast.runtime.settings import (
    IngesterSettings,
    ReducerSettings,
    SettingsError,
    bind_address,
)
from tests.conftest import free_port
from tests.ensemble import ROOT
from tests.test_deploy import (
    OVERLAYS,
    Component,
    clean_env,  # noqa: F401 (a fixture)
    container_env,
    dranspose_containers,
    kubectl,  # noqa: F401 (a fixture)
    of_kind,
    render,
)

# === the settings alone ===


@pytest.mark.parametrize(("url", "bind", "address"), [
    ("tcp://localhost:10000", None, "tcp://127.0.0.1:10000"),
    ("tcp://LOCALHOST:10000", None, "tcp://127.0.0.1:10000"),
    ("tcp://127.0.0.1:10000", None, "tcp://127.0.0.1:10000"),
    ("tcp://127.3.2.1:10000", None, "tcp://127.3.2.1:10000"),
    ("tcp://[::1]:10000", None, "tcp://[::1]:10000"),
    ("tcp://localhost:10000", "0.0.0.0", "tcp://0.0.0.0:10000"),
    ("tcp://ingester-eiger:10010", "0.0.0.0", "tcp://0.0.0.0:10010"),
    ("tcp://ingester-eiger:10010", "*", "tcp://*:10010"),
    ("tcp://ingester-eiger:10010", "10.1.2.3", "tcp://10.1.2.3:10010"),
    ("tcp://ingester-eiger:10010", "eth0", "tcp://eth0:10010"),
    ("tcp://ingester-eiger:10010", "::", "tcp://[::]:10010"),
    ("ipc:///tmp/dfast-ingester", None, "ipc:///tmp/dfast-ingester"),
])
def test_the_bind_address(url: str, bind: str | None, address: str) -> None:
    settings = IngesterSettings(ingester_streams=["s"], ingester_url=url, ingester_bind=bind)
    assert settings.bind_address() == address


@pytest.mark.parametrize("url", ["tcp://ingester-eiger:10010", "tcp://10.0.0.5:10010",
                                 "tcp://0.0.0.0:10010", "tcp://myhost.localdomain:10010"])
def test_a_url_that_is_not_loopback_needs_the_bind_setting(url: str) -> None:
    settings = IngesterSettings(ingester_streams=["s"], ingester_url=url)
    with pytest.raises(SettingsError) as info:
        settings.bind_address()
    message = str(info.value)
    assert "\n" not in message
    assert "INGESTER_BIND" in message and "INGESTER_URL" in message and url in message
    reducer = ReducerSettings(reducer_url=url.replace("10010", "10200"))
    with pytest.raises(SettingsError, match="REDUCER_BIND"):
        reducer.bind_address()


@pytest.mark.parametrize("value", ["tcp://0.0.0.0", "0.0.0.0:10010", "host:1", "a/b"])
def test_a_bind_setting_is_a_host_not_a_url_or_a_port(value: str) -> None:
    with pytest.raises(ValidationError, match="reducer_bind"):
        ReducerSettings(reducer_bind=value)


def test_the_bind_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTER_BIND", "0.0.0.0")
    monkeypatch.setenv("REDUCER_BIND", " 10.9.8.7 ")
    monkeypatch.setenv("INGESTER_URL", "tcp://ingester-eiger:10010")
    monkeypatch.setenv("REDUCER_URL", "tcp://reducer:10200")
    assert IngesterSettings(ingester_streams=["s"]).bind_address() == "tcp://0.0.0.0:10010"
    assert ReducerSettings().bind_address() == "tcp://10.9.8.7:10200"
    monkeypatch.setenv("REDUCER_BIND", "")  # empty: unset
    with pytest.raises(SettingsError):
        ReducerSettings().bind_address()


@settings(deadline=None, max_examples=200)
@given(st.ip_addresses(v=4), st.integers(1, 65535), st.sampled_from([None, "0.0.0.0", "*"]))
def test_only_loopback_binds_without_the_setting(
    ip: ipaddress.IPv4Address, port: int, bind: str | None
) -> None:
    url = Url(f"tcp://{ip}:{port}")
    if bind is not None:
        assert bind_address(url, bind, "X_BIND", "X_URL") == f"tcp://{bind}:{port}"
    elif ip.is_loopback:
        assert bind_address(url, bind, "X_BIND", "X_URL") == f"tcp://{ip}:{port}"
    else:
        with pytest.raises(SettingsError, match="X_BIND"):
            bind_address(url, bind, "X_BIND", "X_URL")


# === real sockets ===


def _hex_address(text: str) -> str:
    """An address of /proc/net/tcp{,6} (hex, in host byte order per 32-bit word) as text."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening(inodes: set[str] | None = None) -> dict[int, set[str]]:
    """The kernel's listening TCP sockets of this network namespace: {port: {address}};
    only those with one of ``inodes`` when given."""
    out: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or (inodes is not None and fields[9] not in inodes):
                continue
            address, _, port = fields[1].partition(":")
            out.setdefault(int(port, 16), set()).add(_hex_address(address))
    return out


def test_a_loopback_url_listens_on_loopback_only(redis_url: str) -> None:
    port = free_port()
    reducer = Reducer(ReducerSettings(redis_url=redis_url, reducer_url=f"tcp://127.0.0.1:{port}"))
    try:
        assert listening()[port] == {"127.0.0.1"}
    finally:
        reducer.close()


def test_an_explicit_bind_listens_there_and_the_url_stays_advertised(redis_url: str) -> None:
    port = free_port()
    url = f"tcp://reducer.example.org:{port}"
    reducer = Reducer(ReducerSettings(redis_url=redis_url, reducer_url=url,
                                      reducer_bind="0.0.0.0"))
    try:
        assert listening()[port] == {"0.0.0.0"}
        assert str(reducer.state.url) == url  # what the workers are told
    finally:
        reducer.close()


def test_an_ingester_advertising_a_name_refuses_to_start_without_the_setting(
    redis_url: str
) -> None:
    port = free_port()
    common = {"redis_url": redis_url, "ingester_streams": ["s"],
              "upstream_url": f"tcp://127.0.0.1:{free_port()}",
              "ingester_url": f"tcp://ingester-s.example.org:{port}"}
    ingester = ZmqPullSingleIngester(ZmqPullSingleSettings(**common))  # type: ignore[arg-type]
    try:
        with pytest.raises(SettingsError, match="INGESTER_BIND"):
            ingester.start()
        assert port not in listening()
    finally:
        ingester.close()
    bound = ZmqPullSingleIngester(
        ZmqPullSingleSettings(**common, ingester_bind="127.0.0.1"))  # type: ignore[arg-type]
    try:
        bound.start()
        assert listening()[port] == {"127.0.0.1"}
        assert str(bound.state.url) == common["ingester_url"]
    finally:
        bound.close()


# === the Kubernetes manifests ===


def test_every_data_socket_of_the_manifests_can_bind(
    kubectl: str, clean_env: pytest.MonkeyPatch
) -> None:
    """The ingesters and the reducer of every overlay advertise their Service name and bind
    every interface of their pod (a missing bind setting would stop them at start)."""
    for overlay in OVERLAYS:
        rendered = render(kubectl, overlay)
        configmaps = of_kind(rendered, "ConfigMap")
        checked = 0
        for _, container in dranspose_containers(rendered):
            component = Component.of(container)
            env = container_env(container, configmaps)
            for name, value in env.items():
                clean_env.setenv(name, value)
            try:
                built = component.build_settings()
            finally:
                for name in env:
                    clean_env.delenv(name)
            if isinstance(built, IngesterSettings | ReducerSettings):
                url = built.ingester_url if isinstance(built, IngesterSettings) \
                    else built.reducer_url
                assert built.bind_address() == f"tcp://0.0.0.0:{url.port}", (overlay, url)
                checked += 1
        assert checked >= 4, overlay  # three ingesters and the reducer


# === the command line ===


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "dranspose_fast.cli", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_the_commands_refuse_in_one_line_naming_the_setting(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "REDUCER_URL": f"tcp://reducer.example.org:{free_port()}"}
    env.update(REDUCER_BIND="", INGESTER_BIND="")  # empty: unset, whatever the shell has
    code, stderr = _cli(["reducer", "--port", str(free_port())], env)
    line = _one_error_line(stderr)
    assert code == 2 and "REDUCER_BIND" in line and "reducer.example.org" in line, stderr
    code, stderr = _cli(["ingester", "-c", "ZmqPullSingleIngester", "-n", "eiger",
                         "-u", f"tcp://127.0.0.1:{free_port()}",
                         "--url", f"tcp://ingester-eiger.example.org:{free_port()}"], env)
    line = _one_error_line(stderr)
    assert code == 2 and "INGESTER_BIND" in line and "ingester-eiger" in line, stderr
    env["INGESTER_URL"] = f"tcp://ingester-sardana.example.org:{free_port()}"
    code, stderr = _cli(["http_ingester", "-c", "dranspose_fast.ingesters.http_sardana:app",
                         "-n", "sardana", "-p", str(free_port())], env)
    line = _one_error_line(stderr)
    assert code == 2 and "INGESTER_BIND" in line and "ingester-sardana" in line, stderr


# === local stays on loopback ===


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            parents[int(proc.name)] = int(stat.rpartition(")")[2].split()[1])
    found = {root}
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
        except OSError:
            continue
    return inodes


def test_local_listens_on_loopback_whatever_the_shell_sets(tmp_path: Path) -> None:
    port, reducer_port, upstream = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), DFAST_CONFIG_TTL="2", DFAST_CONFIG_INTERVAL="0.2",
               BUILD_META_FILE=str(tmp_path / "none.json"),
               INGESTER_BIND="0.0.0.0", REDUCER_BIND="0.0.0.0")  # must not reach local's parts
    log = tmp_path / "local.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dranspose_fast.cli", "local", "--nworkers", "1",
             "--stream", f"eiger=tcp://127.0.0.1:{upstream}",
             "--port", str(port), "--reducer-port", str(reducer_port)],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    controller = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                config = httpx.get(f"{controller}/api/v1/config", timeout=5).json()
                if config["ingesters"] and config["reducer"] and config["workers"]:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        sockets = listening(_socket_inodes(_descendants(proc.pid)))
        data_ports = {Url(config["ingesters"][0]["url"]).port, Url(config["reducer"]["url"]).port}
        assert data_ports <= set(sockets), (data_ports, sockets)
        # redis, controller, reducer (HTTP and results), ingester (ROUTER and metrics), worker
        assert len(sockets) >= 6, sockets
        assert all(a in ("127.0.0.1", "::1") for addrs in sockets.values() for a in addrs), \
            sockets
    finally:
        proc.terminate()
        proc.wait(30)
