"""Several hosts, for real (issue 12, item 3): every role in a network namespace of its own.

Redis, the controller, two ingesters, three workers and the reducer each run in their own
network namespace with their own address on a private bridge (``tests/netns.py``); the
detector's two STINS streams come from a ninth namespace.  Nothing can reach another host over
loopback (every namespace has its own ``lo``), so a component that advertises, binds or dials
127.0.0.1 / localhost for a peer breaks the scan.  The test streams two scans, checks every
event of both (which worker, each stream's frame number, size and every pixel, the parameter
in force), that the components advertise their own addresses, that every TCP connection of
every namespace runs between bridge addresses (none over loopback) and that the expected links
exist (workers to both ingesters, the reducer and Redis, ingesters to the detector), and that
every component stops cleanly.

Needs root and ``ip`` (iproute2); skipped otherwise, except under ``CI=true``, where it fails.
Run as a script (``python -m tests.test_multihost detector ADDRESS``) it is the detector.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from dranspose_fast.data.stream1 import Stream1Data
from dranspose_fast.event import EventData
from dranspose_fast.ingesters.zmqpull_single import ZmqPullSingleSettings
from dranspose_fast.middlewares.stream1 import parse
from dranspose_fast.runtime.settings import ReducerSettings
from tests.e2e_classes import RecordWorker
from tests.netns import Host, Network, TcpSocket, is_loopback, parse_ss, unavailable

ROOT = Path(__file__).resolve().parent.parent
#: Ports as in deploy/kubernetes: every host has its own address, so they never collide.
HTTP_PORT = 5000
DATA_PORT = 10010
REDIS_PORT = 6379
#: The detector's streams: upstream port, image shape and dtype.  eiger's images (128 KiB)
#: travel as zero-copy frames of their own, pilatus's (512 bytes) packed into batches.
STREAMS: dict[str, tuple[int, tuple[int, int], str]] = {
    "eiger": (9999, (256, 256), "uint16"),
    "pilatus": (9998, (16, 8), "uint32"),
}
WORKERS = ("w0", "w1", "w2")
EVENTS = 30  # data events per scan
#: Image numbers of each scan start here, so no frame of scan 1 can pass for one of scan 2.
OFFSETS = (0, 1000)
ROI = b"across hosts"  # the parameter set between the scans
WORKER_CLASS = "tests.test_multihost:HostWorker"
REDUCER_CLASS = "tests.e2e_classes:RecordReducer"


class HostWorker(RecordWorker):
    """``RecordWorker``'s record plus every image's smallest and largest pixel and its sum,
    so the test checks all the pixels that crossed the hosts."""

    def process_event(self, event: EventData, parameters: Any, tick: bool = False) -> Any:
        record = super().process_event(event, parameters, tick)
        pixels = {}
        for name, data in event.streams.items():
            packet = parse(data)
            if isinstance(packet, Stream1Data):
                image = (packet.__pydantic_extra__ or {})["data"]  # parse's extra field
                pixels[name] = [int(image.min()), int(image.max()), int(image.sum())]
        record["pixels"] = pixels
        return record


def _require_namespaces() -> None:
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, but network namespaces cannot be used: {reason}")
    pytest.skip(reason)


@pytest.fixture
def net() -> Iterator[Network]:
    """A bridge of this run; every process, namespace and veth is gone afterwards."""
    _require_namespaces()
    network = Network()
    try:
        network.create()
        yield network
    finally:
        network.close()
    left = network.leftovers()
    assert not left, f"teardown left {left}"


class Cluster:
    """The components of one ensemble, each in a host of ``net``; logs in ``tmp``."""

    def __init__(self, net: Network, tmp: Path) -> None:
        self.net = net
        self.tmp = tmp
        self.hosts: dict[str, Host] = {}
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.detector: subprocess.Popen[Any] | None = None
        self.env: dict[str, str] = {}

    def host(self, role: str) -> Host:
        self.hosts[role] = self.net.add_host(role)
        return self.hosts[role]

    def spawn(self, role: str, argv: list[str], **env: str) -> subprocess.Popen[Any]:
        proc = self.net.popen(self.hosts[role], argv, {**self.env, **env},
                              self.tmp / f"{role}.log", cwd=ROOT)
        self.procs[role] = proc
        return proc

    def component(self, role: str, *args: str, **env: str) -> None:
        self.spawn(role, [sys.executable, "-m", "dranspose_fast.cli", *args], **env)

    def logs(self) -> str:
        parts = []
        for role in self.hosts:
            log = self.tmp / f"{role}.log"
            if log.exists():
                parts.append(f"===== {role} =====\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll ``check`` until it returns something true; fail when a process died."""
        import httpx
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for role, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{role} exited ({proc.returncode}) while waiting "
                                         f"for {what}\n{self.logs()}")
            try:
                value = check()
                if value:
                    return value
            except (httpx.HTTPError, redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    # === the controller's REST API, from the test's namespace over the bridge ===

    @property
    def controller(self) -> str:
        return self.hosts["controller"].url("http", HTTP_PORT)

    def get(self, path: str) -> Any:
        import httpx

        answer = httpx.get(self.controller + path, timeout=10, trust_env=False)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, **kw: Any) -> Any:
        import httpx

        answer = httpx.post(self.controller + path, timeout=30, trust_env=False, **kw)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def published(self) -> dict[str, Any]:
        """The RecordReducer's publish once it ran ``finish`` (over HDF5-REST)."""
        import h5pyd

        endpoint = self.hosts["reducer"].url("http", HTTP_PORT)

        def finished() -> dict[str, Any] | None:
            with h5pyd.File("/", "r", endpoint=endpoint) as f:
                if int(f["finished"][()]) != 1:
                    return None
                return {"records": json.loads(f["records"][()]), "count": int(f["count"][()])}

        out: dict[str, Any] = self.wait("the reducer's publish", finished)
        return out

    # === the detector ===

    def send_scan(self, offset: int) -> None:
        assert self.detector is not None and self.detector.stdin is not None
        self.detector.stdin.write(f"{offset} {EVENTS}\n")
        self.detector.stdin.flush()


def _bind_env(settings_class: type[BaseSettings], address: str) -> dict[str, str]:
    """The settings that say where a component listens, apart from the URL it advertises
    (``INGESTER_BIND``, ``REDUCER_BIND``), set to its host's own address.

    A non-loopback URL without one refuses to start; this names them by their field names.
    """
    env = {name.upper(): address for name in settings_class.model_fields if "bind" in name}
    assert env, f"{settings_class.__name__} has no bind setting"
    return env


def _start(net: Network, tmp: Path) -> Cluster:
    """Every component in its own host, the detector in a ninth; returns when all are up."""
    import redis

    from tests.conftest import redis_server_binary

    c = Cluster(net, tmp)
    for role in ("redis", "controller", "reducer", "detector", *STREAMS, *WORKERS):
        c.host(role)
    db = c.hosts["redis"]
    c.env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": db.url("redis", REDIS_PORT),
             "DFAST_CONFIG_TTL": "2", "DFAST_CONFIG_INTERVAL": "0.2", "LOG_LEVEL": "INFO",
             "BUILD_META_FILE": str(tmp / "no-build-meta.json")}
    # Redis listens on its own address only: not even its own loopback.
    c.spawn("redis", [redis_server_binary(), "--bind", db.address, "--port", str(REDIS_PORT),
                      "--save", "", "--appendonly", "no", "--dir", str(tmp)])
    client = redis.Redis(host=db.address, port=REDIS_PORT, socket_connect_timeout=1)
    c.wait("redis", client.ping)
    client.close()

    det = c.hosts["detector"]
    c.detector = net.popen(det, [sys.executable, "-m", "tests.test_multihost", "detector",
                                 det.address], c.env, tmp / "detector.log",
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert _read_line(c.detector, 30) == "ready", c.logs()

    ctrl = c.hosts["controller"]
    c.component("controller", "controller", "--host", ctrl.address, "--port", str(HTTP_PORT))
    red = c.hosts["reducer"]
    c.component("reducer", "reducer", "--host", red.address, "--port", str(HTTP_PORT),
                REDUCER_CLASS=REDUCER_CLASS, REDUCER_URL=red.url("tcp", DATA_PORT),
                **_bind_env(ReducerSettings, red.address))
    for stream, (port, _shape, _dtype) in STREAMS.items():
        c.component(stream, "ingester", "-c", "ZmqPullSingleIngester", "-n", stream,
                    INGESTER_URL=c.hosts[stream].url("tcp", DATA_PORT),
                    UPSTREAM_URL=det.url("tcp", port),
                    **_bind_env(ZmqPullSingleSettings, c.hosts[stream].address))
    for i, name in enumerate(WORKERS):
        # One tag per worker, so the map says which worker gets which event.
        c.component(name, "worker", WORKER_NAME=name, WORKER_CLASS=WORKER_CLASS,
                    WORKER_TAGS=json.dumps([f"h{i}"]))

    def ready() -> bool:
        config = c.get("/api/v1/config")
        # A worker lists an ingester once it dialled the advertised URL, whether or not
        # anything answers there; the ingester lists the workers whose hellos it received.
        heard = [{w["name"] for w in i["connected_workers"].values()}
                 for i in config["ingesters"]]
        return ({w["name"] for w in config["workers"]} == set(WORKERS)
                and {s for i in config["ingesters"] for s in i["streams"]} == set(STREAMS)
                and heard == [set(WORKERS)] * len(STREAMS)
                and config["reducer"] is not None
                and set(c.get("/api/v1/streams")) == set(STREAMS))

    c.wait("every component", ready, 60)
    return c


def _read_line(proc: subprocess.Popen[Any] | None, timeout: float) -> str:
    assert proc is not None and proc.stdout is not None
    ready, _, _ = select.select([proc.stdout.fileno()], [], [], timeout)
    if not ready:
        raise AssertionError(f"no answer from the detector within {timeout} s")
    line: str = proc.stdout.readline()
    return line.strip()


def _sequence() -> dict[str, Any]:
    """``EVENTS`` events on both streams, event i+1 for worker ``WORKERS[i % 3]`` (its tag)."""
    cells = [[{"constraint": i, "tags": [f"h{i % len(WORKERS)}"]}] for i in range(EVENTS)]
    return {"parts": {"main": {s: cells for s in STREAMS}}, "sequence": ["main"]}


def _check_scan(records: list[dict[str, Any]], scan: int, roi: str) -> None:
    """Every event of scan ``scan`` (0, 1) reduced once, from the right worker, intact."""
    by_event: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_event.setdefault(r["event"], []).append(r)
    assert sorted(by_event) == list(range(EVENTS + 2)), sorted(by_event)
    assert len(records) == EVENTS + 2 * len(WORKERS)
    for r in records:
        assert r["scans"] == scan + 1 and r["roi1"] == roi, r
    # The series' header and end: one broadcast per tag, so every worker gets both.
    for event, htype in ((0, "header"), (EVENTS + 1, "series_end")):
        assert sorted(r["worker"] for r in by_event[event]) == list(WORKERS)
        for r in by_event[event]:
            assert r["images"] == {s: htype for s in STREAMS} and r["pixels"] == {}, r
    for i in range(EVENTS):
        (r,) = by_event[i + 1]
        number = OFFSETS[scan] + i
        assert r["worker"] == WORKERS[i % len(WORKERS)], r
        # [frame number from the header, first pixel]: image n is filled with n
        assert r["images"] == {s: [number, number] for s in STREAMS}, r
        for stream, (_port, shape, dtype) in STREAMS.items():
            size = shape[0] * shape[1] * (2 if dtype == "uint16" else 4)
            assert r["streams"][stream][-1] == size, r
            assert r["pixels"][stream] == [number, number, number * shape[0] * shape[1]], r


def _check_links(c: Cluster) -> None:
    """Every TCP socket of every host: none on loopback, every connection between bridge
    addresses, and the links the ensemble needs are there (so traffic did cross hosts)."""
    subnet = c.net.subnet
    assert subnet is not None
    peers: dict[str, set[tuple[str, int]]] = {}
    for role, host in c.hosts.items():
        sockets = c.net.tcp_sockets(host)
        for s in sockets:
            assert not is_loopback(s.local), f"{role} uses loopback: {s}"
            if s.state != "LISTEN":
                assert s.local == host.address, f"{role}: {s}"
                assert ip_address(s.peer) in subnet and not is_loopback(s.peer), f"{role}: {s}"
        peers[role] = {(s.peer, s.peer_port) for s in sockets if s.state == "ESTAB"}
    db = (c.hosts["redis"].address, REDIS_PORT)
    for role in ("controller", "reducer", *STREAMS, *WORKERS):
        assert db in peers[role], f"{role} has no connection to Redis: {peers[role]}"
    for stream, (port, _shape, _dtype) in STREAMS.items():
        assert (c.hosts["detector"].address, port) in peers[stream], peers[stream]
    for worker in WORKERS:
        needed = {(c.hosts[s].address, DATA_PORT) for s in STREAMS}
        needed.add((c.hosts["reducer"].address, DATA_PORT))
        assert needed <= peers[worker], f"{worker}: {peers[worker]}"


def _parameters_everywhere(c: Cluster, roi: bytes) -> None:
    """Wait until ``roi1`` is ``roi`` and every worker and the reducer hold the controller's
    parameters (its hash; the controller also adds the defaults the components describe)."""
    import httpx

    def converged() -> bool:
        value = httpx.get(c.controller + "/api/v1/parameter/roi1", timeout=10, trust_env=False)
        config = c.get("/api/v1/config")
        digest = config["parameters_hash"]
        hashes = [w["parameters_hash"] for w in config["workers"]]
        return (value.content == roi and digest is not None
                and hashes == [digest] * len(WORKERS)
                and config["reducer"]["parameters_hash"] == digest)

    c.wait(f"roi1 = {roi!r} on every host", converged)


def test_two_scans_across_hosts(net: Network, tmp_path: Path) -> None:
    c = _start(net, tmp_path)
    # Each component advertises its own host's address: the URL peers are told.
    config = c.get("/api/v1/config")
    assert {i["name"]: i["url"] for i in config["ingesters"]} == {
        f"{s}-ingester": c.hosts[s].url("tcp", DATA_PORT) for s in STREAMS}
    assert config["reducer"]["url"] == c.hosts["reducer"].url("tcp", DATA_PORT)

    for scan, offset in enumerate(OFFSETS):
        roi = b"bla"  # RecordWorker's default
        if scan == 1:
            c.post("/api/v1/parameter/roi1", content=ROI)
            roi = ROI
        _parameters_everywhere(c, roi)
        c.post("/api/v1/sequence", json=_sequence())
        c.send_scan(offset)
        c.wait(f"scan {scan + 1} to finish", lambda: c.get("/api/v1/progress")["finished"], 60)
        # last_assigned is the next event to assign (the engine's next_event)
        assert c.get("/api/v1/progress") == {
            "last_assigned": EVENTS + 2, "completed_events": EVENTS + 2,
            "total_events": EVENTS + 2, "finished": True}
        status = c.get("/api/v1/status")
        assert status["dropped_total"] == 0, status["dropped"]
        assert _read_line(c.detector, 10) == f"sent {offset}"
        _check_scan(c.published()["records"], scan, roi.decode())

    _check_links(c)
    # Every component stops cleanly on SIGTERM, Redis last; the detector at the end of input.
    for role in (*WORKERS, *STREAMS, "reducer", "controller", "redis"):
        code = net.stop(c.procs.pop(role), 15)
        assert code == 0, f"{role} stopped with {code}\n{c.logs()}"
    assert c.detector is not None and c.detector.stdin is not None
    c.detector.stdin.close()
    assert c.detector.wait(15) == 0, c.logs()


def test_ss_lines_and_loopback() -> None:
    """What the link check reads from ``ss -Htan`` (runs anywhere, no root)."""
    text = ("LISTEN 0 100 0.0.0.0:10010 0.0.0.0:*\n"
            "ESTAB 0 0 10.231.7.8:38152 10.231.7.6:10010\n"
            "ESTAB 0 0 [::ffff:10.231.7.3]:5000 [::ffff:10.231.7.1]:41000\n"
            "LISTEN 0 4096 127.0.0.53%lo:53 *:*\n"
            "ESTAB 0 0 [::1]:6379 [::1]:50000\n"
            "junk\n")
    assert parse_ss(text) == [
        TcpSocket("LISTEN", "0.0.0.0", 10010, "0.0.0.0", 0),
        TcpSocket("ESTAB", "10.231.7.8", 38152, "10.231.7.6", 10010),
        TcpSocket("ESTAB", "10.231.7.3", 5000, "10.231.7.1", 41000),
        TcpSocket("LISTEN", "127.0.0.53", 53, "0.0.0.0", 0),
        TcpSocket("ESTAB", "::1", 6379, "::1", 50000),
    ]
    assert [is_loopback(a) for a in ("127.0.0.1", "127.3.2.1", "::1", "10.231.7.1",
                                     "0.0.0.0", "::")] == [True, True, True, False, False, False]


# === the detector (run in its own namespace by the test) ===


def _detector(address: str) -> None:
    """PUSH both streams from ``address``; each line ``OFFSET N`` on stdin sends a series
    (header, images OFFSET..OFFSET+N-1 interleaved over the streams, end) on both."""
    from tests.stins_source import StinsSource

    sources = [StinsSource(f"tcp://{address}:{port}", shape, dtype)
               for port, shape, dtype in STREAMS.values()]
    print("ready", flush=True)
    for line in sys.stdin:
        offset, n = (int(x) for x in line.split())
        for src in sources:
            src.send_header()
        for i in range(offset, offset + n):
            for src in sources:
                src.send_image(i)
        for src in sources:
            src.send_end()
        print(f"sent {offset}", flush=True)
    for src in sources:
        src.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["detector"]:
        _detector(sys.argv[2])
