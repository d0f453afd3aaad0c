"""The Redis password stays out of the controller's lock error and its logs.

Two controllers on one password-protected redis-server: the second cannot take
``dfast:controller:lock`` and says which server it tried, with the password as ``***``, in
the exception, in the log records, and (as a process) on stderr.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from dranspose_fast.controller import Controller, ControllerLockError
from tests.conftest import RedisServer, free_port
from tests.controller_sim import settings_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def password() -> str:
    # Characters a URL must quote, so the check covers the password as the URL carries it.
    return f"pw-{secrets.token_hex(8)}/@:%?#"


@pytest.fixture
def secured(tmp_path: Path, password: str) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def leaks(texts: list[str], password: str) -> list[str]:
    """The texts that hold ``password``, as written or as a URL carries it."""
    forms = {password, quote(password, safe=""), quote(password)}
    return [t[:300] for t in texts if any(f in t for f in forms)]


@pytest.fixture
def holder(secured: RedisServer) -> Iterator[Controller]:
    """The first controller: it holds the lock."""
    first = Controller(settings_for(secured.url))
    first.start()
    try:
        yield first
    finally:
        first.close()


def test_lock_error_names_the_server_without_its_password(
    secured: RedisServer, password: str, holder: Controller, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    second = Controller(settings_for(secured.url))
    try:
        with pytest.raises(ControllerLockError) as info:
            second.start()
    finally:
        second.close()
    message = str(info.value)
    assert f"redis://:***@127.0.0.1:{secured.port}/0" in message, message
    assert str(holder.uuid) in message
    texts = [message] + [r.getMessage() for r in caplog.records] + [caplog.text]
    assert any("another controller holds" in r.getMessage() for r in caplog.records)
    assert not leaks(texts, password)


def test_controller_process_refused_the_lock_prints_no_password(
    secured: RedisServer, password: str, holder: Controller,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": secured.url,
           "DFAST_LOCK_TIMEOUT": "0.3", "DFAST_LOCK_RETRY": "0.1", "DFAST_CURVE": "off"}
    done = subprocess.run(
        [sys.executable, "-m", "dranspose_fast.cli", "controller", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "another controller" in done.stderr and ":***@" in done.stderr, done.stderr
    assert not leaks([done.stdout, done.stderr], password)
