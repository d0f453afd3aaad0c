"""End-to-end throughput of the distributed pipeline, beside a raw ZeroMQ relay in the same run.

Topology (all on loopback, real processes): Redis, controller, one ingester, K workers and the
reducer; a PUSH source streams a STINS series of N images as fast as the pipeline takes them.
The time runs from the first frame sent to the controller reporting every result reduced.
The baseline is the same topology without dranspose: source → ``zmq.proxy`` relay → sink.

    python bench/e2e.py --frames 20000 --shape 64 64 --workers 2 --repeats 3
    python bench/e2e.py --frames 1000 --shape 512 1024 --workers 2 --map batched

Reports medians of the repeats, events/s, GB/s and CPU seconds per process (from /proc).
The machine has 2 cores: with six processes the run is CPU-bound; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import RedisServer, free_port  # noqa: E402
from tests.ensemble import Ensemble, vw  # noqa: E402
from tests.stins_source import StinsSource  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICKS


# === baseline: source -> zmq.proxy -> sink ===


def _relay(front: str, back: str) -> None:
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind(front)
    push.bind(back)
    try:
        zmq.proxy(pull, push)
    except zmq.ContextTerminated:
        pass


def _sink(url: str, n: int, done: Any) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(url)
    for _ in range(n):
        pull.recv_multipart(copy=False)
    done.value = time.perf_counter()


def raw_relay(frames: int, shape: tuple[int, int]) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    relay = spawn.Process(target=_relay, args=(front, back), daemon=True)
    relay.start()
    done = spawn.Value("d", 0.0)
    sink = spawn.Process(target=_sink, args=(back, frames + 2, done), daemon=True)
    sink.start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(front)
    source = StinsSource(f"tcp://127.0.0.1:{free_port()}", shape=shape, n=frames)
    msgs = [source.image_frames(0)] * frames
    time.sleep(0.5)
    t0 = time.perf_counter()
    push.send_multipart(source.header_frames())
    for m in msgs:
        push.send_multipart(m, copy=False)
    push.send_multipart(source.end_frames())
    sink.join(120)
    seconds = done.value - t0
    cpu = {"relay": cpu_seconds(relay.pid or 0)}
    relay.kill()
    push.close(0)
    source.close()
    ctx.term()
    return {"seconds": seconds, "cpu_relay": cpu["relay"]}


# === dranspose-fast ===


def pipeline(frames: int, shape: tuple[int, int], workers: int, mapping: str,
             tmp: Path) -> dict[str, Any]:
    redis = RedisServer(tmp)
    redis.start()
    ens = Ensemble(redis.url, tmp)
    source = StinsSource(f"tcp://127.0.0.1:{free_port()}", shape=shape, n=frames)
    try:
        ens.controller()
        ens.reducer("bench.trivial:TrivialReducer")
        names = [f"w{i}" for i in range(workers)]
        for name in names:
            ens.worker(name, "bench.trivial:TrivialWorker")
        ens.ingester("eiger", source.url)
        ens.wait_ready(["eiger"], names, timeout=60)
        span = 10 if mapping == "batched" else 1
        cells = [[vw(i // span)] for i in range(frames)]
        ens.sequence({"parts": {"main": {"eiger": cells}}, "sequence": ["main"]})
        cpu0 = {n: cpu_seconds(p.pid) for n, p in ens.procs.items()}
        t0 = time.perf_counter()
        source.send_series()
        progress = ens.wait_finished(timeout=600)
        seconds = time.perf_counter() - t0
        cpu = {n: round(cpu_seconds(p.pid) - cpu0[n], 2) for n, p in ens.procs.items()}
        status = ens.get("/api/v1/status").json()
        return {"seconds": seconds, "progress": progress, "cpu": cpu,
                "status_keys": sorted(status)}
    finally:
        source.close()
        ens.stop_all()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--shape", type=int, nargs=2, default=(64, 64))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--map", choices=["uniform", "batched"], default="uniform")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    shape = (args.shape[0], args.shape[1])
    nbytes = shape[0] * shape[1] * 2
    events = args.frames + 2
    runs: list[dict[str, Any]] = []
    for r in range(args.repeats):
        base = raw_relay(args.frames, shape)
        with tempfile.TemporaryDirectory() as tmp:
            ours = pipeline(args.frames, shape, args.workers, args.map, Path(tmp))
        runs.append({"baseline": base, "ours": ours})
        print(f"run {r}: ours {events / ours['seconds']:,.0f} events/s, raw relay "
              f"{events / base['seconds']:,.0f} frames/s; cpu {ours['cpu']}", flush=True)
    ours_s = statistics.median(r["ours"]["seconds"] for r in runs)
    base_s = statistics.median(r["baseline"]["seconds"] for r in runs)
    summary = {
        "frames": args.frames, "shape": shape, "workers": args.workers, "map": args.map,
        "events_per_s": events / ours_s, "GB_per_s": args.frames * nbytes / ours_s / 1e9,
        "raw_frames_per_s": events / base_s, "raw_GB_per_s": args.frames * nbytes / base_s / 1e9,
        "ratio_to_raw": base_s / ours_s, "runs": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
