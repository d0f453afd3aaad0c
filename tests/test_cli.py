"""The command line: help, and bad input answered in one line with exit code 2."""

import os
import subprocess
import sys

import pytest

from tests.ensemble import ROOT


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dranspose_fast.cli", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=60)


def test_no_command_prints_usage() -> None:
    out = cli()
    assert out.returncode == 0 and "usage: dranspose-fast" in out.stdout
    for command in ("replay", "controller", "ingester", "worker", "reducer", "debugworker",
                    "local"):
        assert command in out.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["replay", "-w", "a:b", "-r", "c:d"], {}, "needs dump files (-f) or a source class"),
        (["replay", "-w", "a:b", "-r", "c:d", "-f", "x"], {"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        (["ingester", "-c", "NoSuchIngester", "-n", "eiger", "-u", "tcp://127.0.0.1:1"], {},
         "unknown ingester 'NoSuchIngester'"),
        (["ingester", "-c", "ZmqPullSingleIngester", "-n", "eiger", "-u", "nonsense"], {},
         "upstream_url"),
        (["worker", "-n", "w:1"], {"REDIS_URL": "redis://127.0.0.1:1/0"}, "must not contain ':'"),
        (["worker", "-n", "w1"], {"WORKER_TAGS": "not json"}, "worker_tags"),
        (["local", "--stream", "eiger"], {}, "expected NAME=URL"),
        (["local", "--stream", "a=tcp://x:1", "--ingesterclass", "b=X"], {}, "no --stream named"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(args: list[str], env: dict[str, str],
                                                message: str) -> None:
    out = cli(*args, **env)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], out.stderr
