"""CURVE on the data sockets and worker names bound to their connection (docs/security.md).

Real ZeroMQ sockets with libzmq's CURVE, pyzmq's ZAP handler, real ingester and reducer
processes; the attackers are sockets a test opens, as another user on the host would.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from dranspose_fast.ingester.links import MAX_WORKER_FRAME, WorkerLinks
from dranspose_fast.ingester.sources import Counters
from dranspose_fast.ingesters import ZmqPullSingleIngester
from dranspose_fast.runtime import curve, dataplane
from dranspose_fast.runtime.curve import ClientKeys, CurveError, CurveServer, CurveSettings
from tests.conftest import wait_for
from tests.ensemble import ROOT, Ensemble, records_by_event, start, uniform
from tests.ingester_harness import Harness, harness  # noqa: F401 (the fixture)
from tests.stins_source import StinsSource

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")

# === keys ===


@pytest.fixture
def no_curve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the session's keys (tests/conftest.py sets them as variables, which win)."""
    for name in list(os.environ):
        if name.startswith("DFAST_CURVE"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_curve_env")
def test_keys_written_by_the_command_are_read_by_both_sides(tmp_path: Path) -> None:
    folder = curve.write_keys(tmp_path / "keys")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "server.key_secret").stat().st_mode) == 0o600
    settings = CurveSettings(dfast_curve_dir=folder)
    server, client = curve.server_keys(settings), curve.client_keys(settings)
    assert server is not None and client is not None
    assert client.server == server.public
    assert server.allowed == {client.public}
    with pytest.raises(FileExistsError, match="holds CURVE keys already"):
        curve.write_keys(folder)
    again = curve.server_keys(CurveSettings(dfast_curve_dir=curve.write_keys(folder, force=True)))
    assert again is not None and again.public != server.public


@pytest.mark.usefixtures("no_curve_env")
def test_variables_win_over_files(tmp_path: Path) -> None:
    folder = curve.write_keys(tmp_path / "keys")
    public, secret = zmq.curve_keypair()
    settings = CurveSettings(dfast_curve_dir=folder, dfast_curve_server_secret_key=secret.decode(),
                             dfast_curve_client_keys=public.decode())
    server = curve.server_keys(settings)
    assert server is not None and server.public == public
    assert public in server.allowed and len(server.allowed) == 2  # the folder's client too


@pytest.mark.usefixtures("no_curve_env")
@pytest.mark.parametrize("settings, message", [
    (dict(dfast_curve=True), "the server has no secret key"),
    (dict(dfast_curve_server_secret_key="too short"),
     "DFAST_CURVE_SERVER_SECRET_KEY: not a CURVE key"),
    (dict(dfast_curve_server_secret_key=zmq.curve_keypair()[1].decode()),
     "no client key is allowed"),
    (dict(dfast_curve_dir="/nonexistent/keys"), "the server has no secret key"),
])
def test_missing_or_bad_keys_are_one_clear_error(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(CurveError, match=message):
        curve.server_keys(CurveSettings(**settings))


@pytest.mark.usefixtures("no_curve_env")
def test_a_bad_certificate_file_names_the_file(tmp_path: Path) -> None:
    folder = curve.write_keys(tmp_path / "keys")
    (folder / "clients" / "broken.key").write_text("curve\n    public-key = \"nonsense\"\n")
    with pytest.raises(CurveError, match="broken.key"):
        curve.server_keys(CurveSettings(dfast_curve_dir=folder))


@pytest.mark.usefixtures("no_curve_env")
def test_off_only_when_said_or_unconfigured(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "dranspose_fast.runtime.curve"):
        assert curve.server_keys(CurveSettings(dfast_curve=False)) is None
        assert curve.client_keys(CurveSettings(dfast_curve=False)) is None
    assert "DFAST_CURVE=off: the server data sockets are unauthenticated" in caplog.text
    assert curve.undecided(CurveSettings())
    assert not curve.undecided(CurveSettings(dfast_curve=False))


# === the command line ===


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DFAST_CURVE")}
    return subprocess.run([sys.executable, "-m", "dranspose_fast.cli", *args],
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("command", [["worker"], ["reducer", "--port", "0"],
                                     ["ingester", "-c", "ZmqPullSingleIngester", "-n", "x"]])
def test_a_data_command_without_keys_refuses_in_one_line(command: list[str]) -> None:
    done = _cli(*command, REDIS_URL="redis://127.0.0.1:1/0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "DFAST_CURVE_DIR" in lines[0] and "DFAST_CURVE=off" in lines[0]


def test_the_keys_command(tmp_path: Path) -> None:
    done = _cli("keys", str(tmp_path / "k"))
    assert done.returncode == 0, done.stderr
    assert curve.server_keys(CurveSettings(dfast_curve_dir=tmp_path / "k")) is not None
    again = _cli("keys", str(tmp_path / "k"))
    assert again.returncode == 2 and "holds CURVE keys already" in again.stderr


# === worker names on the ingester's ROUTER ===


class Router:
    """A ROUTER with ``WorkerLinks``, as the ingester's data loop has it."""

    def __init__(self, keys: curve.ServerKeys | None, takeover_after: float = 60.0) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.curve = CurveServer(self.ctx, keys, "test-ingester") if keys else None
        if self.curve is not None:
            self.curve.secure(self.sock)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{port}"
        self.counters = Counters()
        self.links = WorkerLinks(self.sock, self.counters, logging.getLogger("test"),
                                 takeover_after=takeover_after,
                                 authenticated=self.curve is not None)
        self.hellos: list[tuple[str, uuid.UUID]] = []

    def dealer(self, keys: ClientKeys | None, name: str = "w1",
               service_uuid: uuid.UUID | None = None) -> zmq.Socket[Any]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        curve.secure_client(sock, keys)
        sock.connect(self.url)
        sock.send_multipart(dataplane.encode_hello(service_uuid or uuid.uuid4(), name))
        return sock

    def hear(self, until: Any) -> None:
        def heard() -> bool:
            if self.sock.poll(50):
                self.links.receive_hellos(lambda n, u: self.hellos.append((n, u)))
            return bool(until())
        wait_for(heard, what="the hellos")

    def send(self, name: str = "w1", event: int = 1) -> None:
        self.links.send_frames(name, [b"E", event.to_bytes(8, "little")], 1, event)

    def close(self) -> None:
        self.sock.close(linger=0)
        if self.curve is not None:
            self.curve.close()
        self.ctx.destroy(linger=0)


def got(sock: zmq.Socket[Any], wait: float = 5.0) -> int | None:
    """The event number of the next message ``sock`` receives within ``wait`` s, or None."""
    if not sock.poll(int(wait * 1000)):
        return None
    return int.from_bytes(sock.recv_multipart()[1], "little")


def _keys(n: int) -> tuple[curve.ServerKeys, list[ClientKeys]]:
    server_public, server_secret = zmq.curve_keypair()
    clients = [ClientKeys(*zmq.curve_keypair(), server_public) for _ in range(n)]
    return (curve.ServerKeys(server_public, server_secret,
                             frozenset(c.public for c in clients)), clients)


@pytest.fixture
def curve_router() -> Iterator[tuple[Router, list[ClientKeys]]]:
    server, clients = _keys(2)
    router = Router(server)
    yield router, clients
    router.close()


def test_another_key_cannot_take_a_live_workers_name(
        curve_router: tuple[Router, list[ClientKeys]]) -> None:
    router, (mine, other) = curve_router
    worker = router.dealer(mine)
    router.hear(lambda: router.hellos)
    service_uuid = router.hellos[0][1]
    # an allowed peer of another key claims the name and the service uuid it read in the config
    thief = router.dealer(other, service_uuid=service_uuid)
    router.hear(lambda: router.counters.refused_worker_names == 1)
    router.send(event=7)
    assert got(worker) == 7
    assert got(thief, wait=0.3) is None
    assert router.hellos == [("w1", service_uuid)]


def test_the_same_key_takes_its_name_back_after_a_restart(
        curve_router: tuple[Router, list[ClientKeys]]) -> None:
    router, (mine, _other) = curve_router
    old = router.dealer(mine)
    router.hear(lambda: len(router.hellos) == 1)
    restarted = router.dealer(mine)  # the old connection is still open: no waiting
    router.hear(lambda: len(router.hellos) == 2)
    router.send(event=3)
    assert got(restarted) == 3
    assert got(old, wait=0.3) is None
    assert router.counters.refused_worker_names == 0


def test_peers_without_an_allowed_key_never_say_hello(
        curve_router: tuple[Router, list[ClientKeys]]) -> None:
    router, (mine, _other) = curve_router
    server = mine.server
    stranger = ClientKeys(*zmq.curve_keypair(), server)
    router.dealer(None)  # no CURVE at all
    router.dealer(stranger)
    wrong_server = ClientKeys(mine.public, mine.secret, zmq.curve_keypair()[0])
    router.dealer(wrong_server)
    assert router.curve is not None
    curve_server = router.curve
    wait_for(lambda: curve_server.refused >= 3, what="three refused handshakes")
    assert not router.sock.poll(200) and router.hellos == []


def test_without_curve_a_takeover_waits_for_the_old_connection_to_go_quiet() -> None:
    router = Router(None, takeover_after=0.5)
    try:
        worker = router.dealer(None)
        router.hear(lambda: len(router.hellos) == 1)
        service_uuid = router.hellos[0][1]
        thief = router.dealer(None, service_uuid=service_uuid)
        router.hear(lambda: router.counters.refused_worker_names == 1)
        router.send(event=1)
        assert got(worker) == 1
        time.sleep(0.6)  # the weaker mode: a silent name is free again (docs/security.md)
        thief.send_multipart(dataplane.encode_hello(service_uuid, "w1"))
        router.hear(lambda: len(router.hellos) == 2)
        router.send(event=2)
        assert got(thief) == 2
    finally:
        router.close()


def test_without_curve_a_closed_connection_frees_its_name_at_once() -> None:
    router = Router(None, takeover_after=60.0)
    try:
        worker = router.dealer(None)
        router.hear(lambda: len(router.hellos) == 1)
        worker.close(linger=0)

        def gone() -> bool:  # a send to the closed connection unbinds the name
            router.send(event=0)
            return "w1" not in router.links.routes
        wait_for(gone, what="the closed connection noticed")
        again = router.dealer(None)
        router.hear(lambda: len(router.hellos) == 2)
        router.links.flush_all()
        assert got(again) == 0  # what was queued meanwhile arrives, in order
    finally:
        router.close()


def test_an_oversized_frame_to_an_ingester_drops_that_connection_only(
        harness: Harness) -> None:
    """A worker's messages to an ingester are hellos: a larger frame (from a peer holding an
    allowed key) closes that connection in libzmq, and nothing of it is kept."""
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    big = harness.ctx.socket(zmq.DEALER)
    curve.secure_client(big, curve.client_keys(CurveSettings()))
    big.connect(str(ing.state.url))
    big.send_multipart([b"H", bytes(16), bytes(MAX_WORKER_FRAME + 1)])
    big.send_multipart(dataplane.encode_hello(uuid.uuid4(), "w1"))  # the same connection
    uid = harness.start_scan(["eiger"], ing)
    harness.assign(uid, 0, [[1]] * 3, ["w0"])
    src.send_series(1)
    assert len(w0.receive(3)) == 3
    assert "w1" not in {cw.name for cw in ing.state.connected_workers.values()}
    assert ing.counter_values().bad_worker_messages == 0
    big.close(linger=0)


# === a real scan under attack ===


def test_outsiders_are_refused_and_the_scan_loses_nothing(
        ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    config = ens.get("/api/v1/config").json()
    ingester_url = config["ingesters"][0]["url"]
    victim = next(w for w in config["workers"] if w["name"] == "w0")
    ctx: zmq.Context[Any] = zmq.Context()
    mine = curve.client_keys(CurveSettings())
    assert mine is not None
    attackers = []
    for keys in (None, ClientKeys(*zmq.curve_keypair(), mine.server)):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        curve.secure_client(sock, keys)
        sock.connect(ingester_url)
        sock.send_multipart(dataplane.encode_hello(uuid.UUID(victim["service_uuid"]), "w0"))
        attackers.append(sock)

    def refused() -> bool:
        ingester = ens.get("/api/v1/config").json()["ingesters"][0]
        return bool(ingester["counters"]["refused_peers"] >= 2)
    ens.wait("the attackers refused", refused)
    ens.sequence(uniform(["eiger"], 10))
    source.send_series()
    assert ens.wait_finished()["finished"]
    assert sorted(records_by_event(ens.published())) == list(range(12))
    assert all(not sock.poll(0) for sock in attackers)
    for sock in attackers:
        sock.close()
    ctx.term()
