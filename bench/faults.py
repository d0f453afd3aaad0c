"""The faults table: kill -9 of one component at t = 3 s of a paced scan, as a user runs it.

Every row starts Redis, the controller, a STINS ingester, three workers and the reducer with
the ``dranspose-fast`` command and the CLI's defaults (config TTL 10 s, the 0.2-style payload
of ``bench.payload02``: one result per event, counted in the reducer's ``publish``), posts
the uniform map, sends a STINS series at a fixed rate from a PUSH socket, kills one component
with SIGKILL at t = 3 s and starts it again under its name (at once, or after the config TTL
for the second worker row). It then reports what the scan says when it ends (or after
``--timeout``): the results in the reducer's publish, the deliveries the scan made (each
gives one result; the series start and end reach every worker present then), the losses
the status counts, whether they add up, ``finished`` and ``reason``.

    python bench/faults.py                     # 20,000 frames at 2 kHz, every row
    python bench/faults.py --frames 4000 --rows ingester controller

The machine has 2 cores: seven processes and the source share them, so the rate is what
the source asked for, not what the pipeline could take.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e import PAYLOADS, UserEnsemble, read_publish  # noqa: E402
from dranspose_fast.runtime.curve import ephemeral_environment  # noqa: E402
from tests.conftest import RedisServer, free_port  # noqa: E402
from tests.ensemble import uniform  # noqa: E402
from tests.stins_source import StinsSource  # noqa: E402

#: (row name, component killed, seconds dead before it is started again; None: the TTL + 1)
ROWS = {
    "worker-soon": ("w1", 0.0),
    "worker-late": ("w1", None),
    "reducer": ("reducer", 0.0),
    "ingester": ("eiger-ingester", 0.0),
    "controller": ("controller", 0.0),
}
CONFIG_TTL = 10.0  # the CLI's default (runtime.settings)
#: Seconds between the end and the final reads: two config intervals (1.3 s, the default).
SETTLE = 3.0


class FaultEnsemble(UserEnsemble):
    """``UserEnsemble`` that remembers each command line, so a killed component restarts."""

    def spawn(self, name: str, args: list[str], append: bool = False,
              **env: str) -> subprocess.Popen[bytes]:
        self.commands[name] = (args, env)
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab" if append else "wb") as fh:
            proc = subprocess.Popen([*self.command, *args], env={**self.env, **env},
                                    stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = proc
        return proc


class Paced(threading.Thread):
    """Sends a STINS series at ``rate`` frames/s on an absolute schedule; a detector blocked
    by back-pressure waits (``stop()`` gives up)."""

    def __init__(self, source: StinsSource, frames: int, rate: float) -> None:
        super().__init__(name="detector", daemon=True)
        self.source, self.frames, self.rate = source, frames, rate
        self.stopped = threading.Event()
        self.sent = 0

    def _send(self, parts: list[bytes]) -> None:
        while not self.stopped.is_set():
            try:
                self.source.socket.send_multipart(parts, zmq.NOBLOCK)
                self.sent += 1
                return
            except zmq.Again:
                time.sleep(0.001)

    def run(self) -> None:
        src = self.source
        self._send(src.header_frames())
        t0 = time.perf_counter()
        for i in range(self.frames):
            delay = t0 + i / self.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self._send(src.image_frames(i))
        self._send(src.end_frames())

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def run_row(row: str, frames: int, rate: float, kill_at: float, timeout: float,
            tmp: Path) -> dict[str, Any]:
    victim, dead = ROWS[row]
    redis = RedisServer(tmp)
    redis.start()
    ens = FaultEnsemble(redis.url, tmp, fast_timings=False, launch="script")
    ens.env.update(ephemeral_environment())
    source = StinsSource(f"tcp://127.0.0.1:{free_port()}", shape=(64, 64), n=frames)
    worker_cls, reducer_cls = PAYLOADS["02"]
    workers = ["w0", "w1", "w2"]
    try:
        ens.controller()
        ens.ingester("eiger", source.url)
        for name in workers:
            ens.worker(name, worker_cls)
        ens.reducer(reducer_cls)
        ens.wait_ready(["eiger"], workers, timeout=60)
        uid = ens.sequence(uniform(["eiger"], frames))
        sender = Paced(source, frames, rate)
        sender.start()
        t0 = time.monotonic()
        time.sleep(kill_at)
        ens.kill(victim)
        killed = time.monotonic()
        time.sleep(CONFIG_TTL + 1.0 if dead is None else dead)
        args, env = ens.commands[victim]
        ens.spawn(victim, args, append=True, **env)
        finished = False
        status: dict[str, Any] = {}
        while time.monotonic() - killed < timeout:
            try:
                status = ens.get("/api/v1/status").json()
                if status.get("mapping_uuid") == uid and status.get("finished"):
                    finished = True
                    break
            except Exception:  # the controller restarting
                pass
            time.sleep(0.2)
        took = time.monotonic() - t0
        sender.stop()
        time.sleep(SETTLE)  # the components' configs (and counters) catch up
        try:
            status = ens.get("/api/v1/status").json()
        except Exception:
            pass
        try:
            reduced = int(read_publish(ens.reducer_url, ("count",))["count"])
        except Exception:
            reduced = -1
        (tmp / "status.json").write_text(json.dumps(status, indent=1))
        lost = status.get("lost_workers", {}).values()
        workers_now = status.get("workers", {}).values()
        # every delivery gives one result (a broadcast reaches the workers present when it
        # is emitted); a lost worker's rebound deliveries count once, at their new worker
        deliveries = sum(w["deliveries"] for w in workers_now) + sum(
            w["deliveries"] - w["events_rebound"] for w in lost)
        results_sent = sum(w["results"] for w in workers_now)
        counted = {
            "lost with workers": sum(w["events_lost"] for w in lost),
            "lost upstream": sum(v["events"] for v in status.get("lost_upstream", {}).values()),
            "not in publish": status.get("counters", {}).get("results_not_in_publish", 0),
        }
        return {
            "row": row, "reduced": reduced, "deliveries": deliveries,
            "results_sent": results_sent, "finished": finished,
            "detector_sent": sender.sent, "reason": status.get("reason"),
            "seconds": round(took, 1), "counted": {k: v for k, v in counted.items() if v},
            "rebound": sum(w.get("events_rebound", 0) for w in lost),
        }
    finally:
        for name in list(ens.procs):
            try:
                ens.stop(name)
            except AssertionError:
                pass
        source.socket.close(linger=0)
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000.0, help="frames per second")
    parser.add_argument("--kill-at", type=float, default=3.0, help="seconds into the scan")
    parser.add_argument("--timeout", type=float, default=90.0,
                        help="seconds after the kill to wait for the end")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    print("| fault | results in publish | deliveries | counted losses | adds up | finished "
          "| reason | rebound | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    logs = Path(tempfile.mkdtemp(prefix="dfast-faults-"))
    for row in args.rows:
        (logs / row).mkdir()
        r = run_row(row, args.frames, args.rate, args.kill_at, args.timeout, logs / row)
        counted = sum(r["counted"].values())
        # a restarted reducer ends the scan: what the workers sent is either in the new
        # publish or counted; otherwise every delivery is a result in publish or counted
        total = r["results_sent"] if row == "reducer" else r["deliveries"]
        losses = ", ".join(f"{k} {v:,}" for k, v in r["counted"].items()) or "-"
        print(f"| {row} | {r['reduced']:,} | {r['deliveries']:,} | {losses} "
              f"| {r['reduced'] + counted == total} | {r['finished']} | {r['reason']} "
              f"| {r['rebound']:,} | {r['seconds']} |", flush=True)
        if r["detector_sent"] < args.frames + 2:
            print(f"  (the detector was held back: {r['detector_sent']:,} of "
                  f"{args.frames + 2:,} messages sent)", flush=True)
    print(f"logs and each row's final /api/v1/status in {logs}")

if __name__ == "__main__":
    main()
