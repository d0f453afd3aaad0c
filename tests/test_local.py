"""``dranspose-fast local`` end to end with the shipped example classes.

The example recording is streamed over ZeroMQ into a local ensemble (its own private Redis,
controller, reducer, two workers, a STINS and a JSON ingester); the live reducer's map must be
the one the replay of the same recording computes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5pyd
import httpx
import numpy as np
import zmq

from dranspose_fast.dump import read_dump
from tests.conftest import free_port
from tests.ensemble import ROOT, uniform

DATA = ROOT / "examples" / "data"


def frames_of(path: Path, stream: str) -> list[list[bytes]]:
    return [[bytes(f) for f in m.streams[stream].frames] for m in read_dump(path)]


def alive_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def test_local_ensemble_computes_what_replay_computes(tmp_path: Path) -> None:
    ctx = zmq.Context()
    eiger, positions = ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)
    eiger_port = eiger.bind_to_random_port("tcp://127.0.0.1")
    positions_port = positions.bind_to_random_port("tcp://127.0.0.1")
    port, reducer_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), DFAST_CONFIG_TTL="2", DFAST_CONFIG_INTERVAL="0.2",
               STREAM_TYP="JSON", BUILD_META_FILE=str(tmp_path / "none.json"))
    log = open(tmp_path / "local.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dranspose_fast.cli", "local",
         "--stream", f"eiger=tcp://127.0.0.1:{eiger_port}",
         "--stream", f"positions=tcp://127.0.0.1:{positions_port}",
         "--ingesterclass", "positions=MultipartIngester",
         "-w", "examples.roi:RoiWorker", "-r", "examples.roi:RoiReducer",
         "--port", str(port), "--reducer-port", str(reducer_port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    controller = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "local.log").read_text()
            try:
                if set(httpx.get(f"{controller}/api/v1/streams").json()) == {"eiger",
                                                                             "positions"}:
                    workers = httpx.get(f"{controller}/api/v1/config").json()["workers"]
                    if len(workers) == 2:
                        break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "local.log").read_text()
            time.sleep(0.1)
        body = uniform(["eiger", "positions"], 400)
        # 400 data events; the automatic start/end events carry the series header and end
        answer = httpx.post(f"{controller}/api/v1/sequence", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        for frames in frames_of(DATA / "eiger.cbors", "eiger"):
            eiger.send_multipart(frames)
        for frames in frames_of(DATA / "positions.cbors", "positions"):
            positions.send_multipart(frames)
        deadline = time.monotonic() + 120
        while not httpx.get(f"{controller}/api/v1/progress").json()["finished"]:
            assert time.monotonic() < deadline, (tmp_path / "local.log").read_text()[-5000:]
            time.sleep(0.1)
        time.sleep(1.0)  # the reducer's finish publishes the final map
        with h5pyd.File("/", "r", endpoint=f"http://127.0.0.1:{reducer_port}") as f:
            live_roi = f["map/roi"][()]
            live_count = f["map/count"][()]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
        eiger.close(0)
        positions.close(0)
        ctx.term()
    assert code == 0, (tmp_path / "local.log").read_text()[-5000:]
    assert "started a private redis-server" in (tmp_path / "local.log").read_text()
    assert alive_with(f"--port {port}") == []  # nothing left running

    out = tmp_path / "replayed.h5"
    subprocess.run(
        [sys.executable, "-m", "dranspose_fast.cli", "replay", "-w", "examples.roi:RoiWorker",
         "-r", "examples.roi:RoiReducer", "-f", str(DATA / "eiger.cbors"),
         str(DATA / "positions.cbors"), "--out", str(out)],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=300,
    )
    import h5py

    with h5py.File(out) as f:
        np.testing.assert_array_equal(live_count, f["map/count"][()])
        np.testing.assert_allclose(live_roi, f["map/roi"][()])
