"""Redis with credentials (issue 11, item 5): a password, and TLS with a self-signed certificate.

One whole scan through real processes (controller, reducer, two workers, a STINS ingester)
against a redis-server that requires a password, and one against a redis-server that speaks
TLS only (and requires the password too).  A wrong password, a missing one and a certificate
the client cannot check each stop a component at start with one line; the password appears in
no log, and in no answer of the controller's REST API.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from tests.conftest import RedisServer, RedisTls, free_port, redis_server_binary
from tests.ensemble import ROOT, Ensemble, start, uniform
from tests.stins_source import StinsSource

#: Characters a URL must quote, so the password only works when every part keeps it intact.
PASSWORD_CHARS = "/@:%?#"


def new_password() -> str:
    return f"pw-{secrets.token_hex(8)}{PASSWORD_CHARS}"


def leaks(texts: list[str], password: str) -> list[str]:
    """The texts that hold ``password``, as written or as a URL carries it."""
    forms = {password, quote(password, safe=""), quote(password)}
    return [t[:200] for t in texts if any(f in t for f in forms)]


def one_scan(redis_url: str, tmp: Path, source: StinsSource) -> list[str]:
    """Run one 10-event scan with real processes on ``redis_url``; return every log and the
    controller's answers (for the leak check).  Fails unless every event was reduced."""
    ens = Ensemble(redis_url, tmp)
    texts: list[str] = []
    try:
        start(ens, source)
        ens.sequence(uniform(["eiger"], 10))
        source.send_series()
        assert ens.wait_finished()["finished"]
        published = ens.published()
        events = Counter(r["event"] for r in published["records"])
        assert events == Counter({0: 2, 11: 2, **{i: 1 for i in range(1, 11)}}), events
        for path in ("/api/v1/config", "/api/v1/status", "/api/v1/logs?level=DEBUG",
                     "/api/v1/progress", "/api/v1/sequence"):
            answer = ens.get(path)
            assert answer.status_code == 200, (path, answer.text)
            texts.append(answer.text)
    finally:
        codes = ens.stop_all()
    assert all(code == 0 for code in codes.values()), (codes, ens.all_logs())
    return texts + [ens.log(name) for name in ens.logs]


def component_error(redis_url: str) -> tuple[int, str]:
    """Start a reducer on ``redis_url``: (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url,
           "REDUCER_URL": f"tcp://127.0.0.1:{free_port()}"}
    done = subprocess.run([sys.executable, "-m", "dranspose_fast.cli", "reducer",
                           "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr


def assert_refused_in_one_line(redis_url: str, why: str, *hidden: str) -> None:
    """A reducer started on ``redis_url`` exits with code 2 and one line saying ``why``,
    naming REDIS_URL and holding none of the ``hidden`` passwords."""
    code, stderr = component_error(redis_url)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert "REDIS_URL" in lines[0] and why in lines[0].lower(), stderr
    for password in hidden:
        assert not leaks([stderr], password), stderr


# === a password ===


def test_a_scan_against_a_password_protected_redis(tmp_path: Path,
                                                   source: StinsSource) -> None:
    password = new_password()
    server = RedisServer(tmp_path, password=password)
    server.start()
    try:
        with pytest.raises(redis.AuthenticationError):  # the server does ask for it
            redis.Redis(port=server.port).ping()
        texts = one_scan(server.url, tmp_path, source)
        assert not leaks(texts, password)
        wrong = new_password()
        assert_refused_in_one_line(server.url.replace(quote(password, safe=""),
                                                      quote(wrong, safe="")),
                                   "refused the password", wrong, password)
        assert_refused_in_one_line(server.url.replace(f":{quote(password, safe='')}@", ""),
                                   "requires a password", password)
    finally:
        server.stop()


# === TLS ===


def redis_server_binaries() -> list[str]:
    """Every redis-server this test may use: the fixtures' one, then each other on PATH."""
    found = [redis_server_binary()]
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, "redis-server")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) and \
                candidate not in found:
            found.append(candidate)
    return found


def supports_tls(binary: str, tmp: Path) -> bool:
    """Whether ``binary`` was built with TLS: a build without it rejects ``tls-port`` as a
    bad directive; one with it starts, finds nothing to listen on and exits."""
    done = subprocess.run([binary, "--port", "0", "--tls-port", "0", "--dir", str(tmp)],
                          capture_output=True, text=True, timeout=30)
    return "Bad directive" not in done.stdout + done.stderr


def self_signed(tmp: Path) -> RedisTls:
    """A self-signed certificate for 127.0.0.1 (its own CA), by the openssl command."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed to make the test's certificate"
    cert, key = tmp / "redis.crt", tmp / "redis.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return RedisTls(cert=cert, key=key, ca=cert)


def test_a_scan_over_tls_with_a_self_signed_certificate(tmp_path: Path,
                                                       source: StinsSource) -> None:
    tried = redis_server_binaries()
    binary = next((b for b in tried if supports_tls(b, tmp_path)), None)
    if binary is None:
        pytest.skip(f"the redis-server build does not support TLS (tried {', '.join(tried)})")
    password = new_password()
    server = RedisServer(tmp_path, password=password, tls=self_signed(tmp_path), binary=binary)
    server.start()
    try:
        assert server.url.startswith("rediss://")
        with pytest.raises(redis.ConnectionError):  # TLS only: plain Redis is not answered
            redis.Redis(port=server.port, password=password, socket_timeout=2).ping()
        texts = one_scan(server.url, tmp_path, source)
        assert not leaks(texts, password)
        # without the CA the client cannot check the certificate: refused, in one line
        assert_refused_in_one_line(server.url.partition("?")[0], "certificate verify failed",
                                   password)
    finally:
        server.stop()
