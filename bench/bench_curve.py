"""The bare cost of ZeroMQ CURVE: PUSH -> PULL over tcp loopback, plain against CURVE.

Run: ``python3 bench/bench_curve.py [--frames N] [--size BYTES ...] [--rounds R]``.

The sender runs in its own (spawned) process, the receiver in this one, each with a fresh
context per run. With CURVE the PULL is the server (as the reducer and the ingester will be)
and a ``ThreadAuthenticator`` on its context admits only the client's public key, the setup
the product will use. Plain and CURVE runs alternate within each round (the order flips every
round) so a neighbour's load falls on both. A run is timed from the receiver's first frame to
its last; CPU seconds are reported per process (both include that process's libzmq I/O
thread, which is where CURVE encrypts and decrypts).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

MODES = ("plain", "curve")


@dataclass
class Run:
    """One run: receiver's window and the CPU seconds of both processes."""

    seconds: float  # first frame -> last frame at the receiver
    recv_cpu: float  # receiver process, same window
    send_cpu: float  # sender process, connect -> all delivered
    send_wall: float


@dataclass
class CurveKeys:
    """Z85 keys of one run: the server's pair and the client's pair."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes


class AllowList:
    """ZAP credentials provider: only the listed client keys (Z85) get in."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _keep_heap() -> None:
    # the product's heap settings (runtime.heap): 1 MiB messages served from a kept heap
    # instead of a fresh mmap each, so page faults do not blur the cost of the crypto
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package
    from dranspose_fast.runtime.heap import keep_freed_memory

    if not keep_freed_memory(1 << 30):
        raise SystemExit("--heap: mallopt() is not available here")


def _sender(port: int, size: int, frames: int, keys: CurveKeys | None, heap: bool,
            out: Connection) -> None:
    if heap:
        _keep_heap()
    buf = memoryview(os.urandom(size))  # one preallocated buffer, sent zero-copy
    wall0, cpu0 = time.perf_counter(), _cpu()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    if keys is not None:
        sock.curve_secretkey = keys.client_secret
        sock.curve_publickey = keys.client_public
        sock.curve_serverkey = keys.server_public
    sock.connect(f"tcp://127.0.0.1:{port}")
    for _ in range(frames):
        sock.send(buf, copy=False)
    sock.close(linger=-1)
    ctx.term()  # returns once every frame has left (linger -1)
    out.send((_cpu() - cpu0, time.perf_counter() - wall0))
    out.close()


def run_once(size: int, frames: int, mode: str, heap: bool) -> Run:
    """One PUSH -> PULL run of ``frames`` frames of ``size`` bytes in ``mode``."""
    ctx = zmq.Context()
    auth: ThreadAuthenticator | None = None
    keys: CurveKeys | None = None
    sock = ctx.socket(zmq.PULL)
    sock.rcvtimeo = 60_000  # a refused handshake would otherwise hang forever
    if mode == "curve":
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        keys = CurveKeys(server_public, server_secret, client_public, client_secret)
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback("*", AllowList({client_public}))
        sock.curve_server = True
        sock.curve_secretkey = server_secret
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    parent, child = mp.get_context("spawn").Pipe(duplex=False)
    proc = mp.get_context("spawn").Process(target=_sender,
                                           args=(port, size, frames, keys, heap, child))
    proc.start()
    try:
        first = sock.recv(copy=False)
        t0, cpu0 = time.perf_counter(), _cpu()
        if keys is not None and first.get("User-Id") != keys.client_public.decode():
            raise SystemExit("CURVE run did not go through the authenticator")
        for _ in range(frames - 1):
            sock.recv(copy=False)
        t1, cpu1 = time.perf_counter(), _cpu()
    except zmq.Again:
        proc.kill()
        raise SystemExit(f"{mode} {size} B: no frame for 60 s (handshake refused?)") from None
    send_cpu, send_wall = parent.recv()
    proc.join()
    sock.close()
    if auth is not None:
        auth.stop()
    ctx.term()
    return Run(t1 - t0, cpu1 - cpu0, send_cpu, send_wall)


def _spread(values: list[float], fmt: str) -> str:
    return (f"{format(statistics.median(values), fmt)} "
            f"({format(min(values), fmt)}–{format(max(values), fmt)})")


def report(size: int, frames: int, runs: dict[str, list[Run]]) -> None:
    """Print medians and min–max of one frame size, then the CURVE/plain ratio."""
    print(f"\n{size} B × {frames} frames, {len(runs['plain'])} rounds")
    print(f"{'mode':6} {'frames/s':>26} {'GB/s':>20} {'recv cores':>18} {'send cores':>18}")
    rates: dict[str, list[float]] = {}
    for mode in MODES:
        rs = runs[mode]
        rates[mode] = [(frames - 1) / r.seconds for r in rs]
        gbs = [x * size / 1e9 for x in rates[mode]]
        # CPU seconds per wall second: 1.0 is one core busy the whole time
        recv_load = [r.recv_cpu / r.seconds for r in rs]
        send_load = [r.send_cpu / r.send_wall for r in rs]
        print(f"{mode:6} {_spread(rates[mode], ',.0f'):>26} {_spread(gbs, '.3f'):>20} "
              f"{_spread(recv_load, '.2f'):>18} {_spread(send_load, '.2f'):>18}")
        cpu = [r.recv_cpu + r.send_cpu for r in rs]
        print(f"{'':6} cpu s per run: recv {statistics.median([r.recv_cpu for r in rs]):.2f}, "
              f"send {statistics.median([r.send_cpu for r in rs]):.2f}, "
              f"both {statistics.median(cpu):.2f}")
    of_medians = statistics.median(rates["curve"]) / statistics.median(rates["plain"])
    per_round = [c / p for c, p in zip(rates["curve"], rates["plain"], strict=True)]
    print(f"CURVE/plain throughput: ratio of medians {of_medians:.3f}; per-round ratios "
          f"{_spread(per_round, '.3f')} (median (min–max))")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per run (default 200000 up to 64 KiB frames, else 10000)")
    parser.add_argument("--size", type=int, nargs="+", default=[8192, 1048576],
                        help="frame sizes in bytes (default 8192 1048576)")
    parser.add_argument("--heap", action="store_true",
                        help="apply the product's malloc settings (dranspose_fast) in both")
    parser.add_argument("--rounds", type=int, default=7, help="A/B rounds (default 7)")
    args = parser.parse_args(argv)
    if not zmq.has("curve"):
        raise SystemExit(f"libzmq {zmq.zmq_version()} was built without CURVE "
                         "(zmq.has('curve') is False): nothing to measure")
    if args.rounds < 1 or (args.frames is not None and args.frames < 2):
        raise SystemExit("need --rounds >= 1 and --frames >= 2")
    if args.heap:
        _keep_heap()
    print(f"libzmq {zmq.zmq_version()}, pyzmq {zmq.pyzmq_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"heap settings {'on' if args.heap else 'off'}")
    for size in args.size:
        frames = args.frames or (200_000 if size <= 65536 else 10_000)
        runs: dict[str, list[Run]] = {m: [] for m in MODES}
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                runs[mode].append(run_once(size, frames, mode, args.heap))
        report(size, frames, runs)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
