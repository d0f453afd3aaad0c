"""Run real component processes for end-to-end tests: ``dranspose-fast <role>`` per process.

Every process gets a free port, the test's private Redis and short timing settings; the
harness stops all of them (SIGTERM, then kill) and checks that each stopped cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def vw(constraint: int | None, tags: list[str] | None = None) -> dict[str, Any]:
    return {"constraint": constraint, "tags": tags or ["generic"]}


def uniform(streams: list[str], n: int) -> dict[str, Any]:
    """Part ``main``: ``n`` events, constraint i on every stream."""
    return {"parts": {"main": {s: [[vw(i)] for i in range(n)] for s in streams}},
            "sequence": ["main"]}


class Ensemble:
    def __init__(self, redis_url: str, tmp: Path, ttl: float = 2.0,
                 interval: float = 0.2) -> None:
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "PYTHONPATH": str(ROOT),
            "DFAST_CONFIG_TTL": str(ttl),
            "DFAST_CONFIG_INTERVAL": str(interval),
            "LOG_LEVEL": "INFO",
            "BUILD_META_FILE": str(tmp / "no-build-meta.json"),
        }
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.controller_url = ""
        self.reducer_url = ""

    # === processes ===

    def spawn(self, name: str, args: list[str], append: bool = False,
              **env: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab" if append else "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "dranspose_fast.cli", *args],
                                    env={**self.env, **env}, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=ROOT)
        self.procs[name] = proc
        self.commands[name] = (args, env)
        return proc

    def kill(self, name: str) -> None:
        """kill -9 one component (it is gone from ``procs``; ``respawn`` brings it back)."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def respawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``name`` again with the same command line and environment (same ports)."""
        args, env = self.commands[name]
        with open(self.logs[name], "ab") as fh:
            fh.write(b"\n===== respawned =====\n")
        return self.spawn(name, args, append=True, **env)

    def controller(self) -> None:
        port = free_port()
        self.spawn("controller", ["controller", "--port", str(port)])
        self.controller_url = f"http://127.0.0.1:{port}"

    def reducer(self, cls: str | None = "tests.e2e_classes:RecordReducer") -> None:
        port = free_port()
        args = ["reducer", "--port", str(port)] + (["-c", cls] if cls else [])
        self.spawn("reducer", args, REDUCER_URL=f"tcp://127.0.0.1:{free_port()}")
        self.reducer_url = f"http://127.0.0.1:{port}"

    def worker(self, name: str, cls: str | None = "tests.e2e_classes:RecordWorker",
               tags: list[str] | None = None, **env: str) -> None:
        args = ["worker", "-n", name] + (["-c", cls] if cls else [])
        self.spawn(name, args, WORKER_TAGS=json.dumps(tags or ["generic"]), **env)

    def ingester(self, stream: str, upstream: str, cls: str = "ZmqPullSingleIngester",
                 name: str | None = None, **env: str) -> None:
        self.spawn(name or f"{stream}-ingester",
                   ["ingester", "-c", cls, "-n", stream, "-u", upstream,
                    "--url", f"tcp://127.0.0.1:{free_port()}"], **env)

    def stop(self, name: str, timeout: float = 15.0) -> int:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name} did not stop on SIGTERM:\n{self.log(name)}") from None

    def stop_all(self) -> dict[str, int]:
        return {name: self.stop(name) for name in list(reversed(self.procs))}

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    def all_logs(self) -> str:
        return "\n".join(f"===== {n} =====\n{self.log(n)[-4000:]}" for n in self.logs)

    # === HTTP ===

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.controller_url + path, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.controller_url + path, timeout=30, **kw)

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited ({proc.returncode}) while waiting for "
                                         f"{what}\n{self.all_logs()}")
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.all_logs()}")

    def wait_ready(self, streams: list[str], workers: list[str], timeout: float = 30.0) -> None:
        def ready() -> bool:
            config = self.get("/api/v1/config").json()
            have_workers = {w["name"] for w in config["workers"]}
            have_streams = {s for i in config["ingesters"] for s in i["streams"]}
            available = set(self.get("/api/v1/streams").json())
            return (set(workers) <= have_workers and set(streams) <= have_streams
                    and set(streams) <= available and config.get("reducer") is not None)

        self.wait(f"streams {streams} and workers {workers}", ready, timeout)

    def sequence(self, body: dict[str, Any], **params: Any) -> str:
        answer = self.post("/api/v1/sequence", json=body, params=params)
        assert answer.status_code == 200, answer.text
        uid: str = answer.json()
        return uid

    def wait_finished(self, timeout: float = 60.0) -> dict[str, Any]:
        self.wait("the scan to finish", lambda: self.get("/api/v1/progress").json()["finished"],
                  timeout)
        progress: dict[str, Any] = self.get("/api/v1/progress").json()
        return progress

    def published(self, timeout: float = 30.0) -> dict[str, Any]:
        """The RecordReducer's publish once it ran ``finish``: records and count."""
        import h5pyd

        out: dict[str, Any] = {}

        def finished() -> bool:
            with h5pyd.File("/", "r", endpoint=self.reducer_url) as f:
                if int(f["finished"][()]) != 1:
                    return False
                out["records"] = json.loads(f["records"][()])
                out["count"] = int(f["count"][()])
                return True

        self.wait("the reducer to finish", finished, timeout)
        return out


def start(ens: Ensemble, source: Any, workers: int = 2, **kw: Any) -> list[str]:
    """Controller, reducer, ``workers`` workers and one STINS ingester on ``source``."""
    names = [f"w{i}" for i in range(workers)]
    ens.controller()
    ens.reducer()
    for name in names:
        ens.worker(name, **kw)
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], names)
    return names


def records_by_event(published: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict]] = {}
    for r in published["records"]:
        out.setdefault(r["event"], []).append(r)
    return out


def frame_logs(ens: Ensemble, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """What ``tests.load_classes.FrameLogReducer`` published at ``finish``:
    ``{worker: {"event", "stream", "id": int64 arrays}}``."""
    import h5pyd

    out: dict[str, dict[str, Any]] = {}

    def finished() -> bool:
        with h5pyd.File("/", "r", endpoint=ens.reducer_url) as f:
            if int(f["finished"][()]) != 1:
                return False
            for worker in json.loads(f["workers"][()]):
                out[worker] = {key: f[worker][key][()] for key in ("event", "stream", "id")}
            return True

    ens.wait("the reducer to publish the frame logs", finished, timeout)
    return out
