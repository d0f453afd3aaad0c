"""What both sides of the end-to-end benchmark share, and the baseline side itself.

* CPU accounting from ``/proc`` (per process, and per kind of thread: libzmq's I/O threads
  do the socket copies of big frames, which py-spy does not see);
* the sources: a burst of prebuilt STINS messages as fast as the socket takes them, or a
  paced series stamped with its send times (latency mode);
* the raw relay, ``source -> zmq.proxy -> sink`` in real processes, timed from the first send
  to the sink's last frame: the same-run baseline of ``bench/e2e.py``.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from tests.conftest import free_port
from tests.stins_source import StinsSource

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICKS


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (``/proc/PID/stat`` field 10): each fresh page
    a large frame lands in costs one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return -1
    return int(fields[7])


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per kind of thread: libzmq's I/O threads (``ZMQbg/IO/*``) and the rest.

    py-spy sees only the Python threads; the I/O threads do the socket copies of big frames.
    """
    out = {"zmq_io": 0.0, "python": 0.0}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        kind = "zmq_io" if name.startswith("ZMQbg/IO") else "python"
        out[kind] += (int(fields[11]) + int(fields[12])) / TICKS
    return out


# === senders ===

Sender = Callable[[zmq.Socket[Any]], None]
#: Latency mode also reports the images sent after this many seconds (the scan start left out).
STEADY_AFTER = 0.1
PR_SET_TIMERSLACK = 29


def fine_timer_slack() -> bool:
    """Ask Linux for 1 µs of timer slack (default 50 µs): sleeps end close to their deadline."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(1000), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def burst_sender(source: StinsSource, frames: int) -> Sender:
    """Header, ``frames`` identical images, end: as fast as the socket takes them."""
    image = source.image_frames(0)

    def send(sock: zmq.Socket[Any]) -> None:
        sock.send_multipart(source.header_frames())
        for _ in range(frames):
            sock.send_multipart(image, copy=False)
        sock.send_multipart(source.end_frames())

    return send


class PacedSender:
    """Images at ``rate`` per second on an absolute schedule, each stamped with its send time.

    Each wait sleeps until ``spin`` before the deadline and busy-waits the rest, so the sends
    keep to the schedule within a few µs on an idle core while the source does not burn a whole
    core at low rates. A late send is not made up by skipping: the next deadlines stay where
    they were (open loop), so a stalled pipeline shows in the latency rather than hiding in
    a slower source. ``lateness`` holds each send's delay behind its deadline (seconds).
    """

    def __init__(self, shape: tuple[int, int], frames: int, rate: float, spin_us: float,
                 lead_in: float = 0.01) -> None:
        self.shape, self.frames, self.period = shape, frames, 1.0 / rate
        self.lead_in = lead_in
        self.spin = spin_us * 1e-6
        data = np.full(shape, 7, np.uint16).tobytes()
        self.payload: Any = data if len(data) < zmq.COPY_THRESHOLD else zmq.Frame(data)
        self.lateness = np.zeros(frames)
        self.cpu = 0.0
        self.slack_ok = fine_timer_slack()

    def header(self, i: int, sent: float) -> bytes:
        h, w = self.shape
        return (f'{{"htype":"image","msg_number":{i + 1},"frame":{i},"shape":[{h},{w}],'
                f'"type":"uint16","compression":"none","timestamps":{{"sent":{sent!r}}}}}'
                ).encode()

    def __call__(self, sock: zmq.Socket[Any]) -> None:
        perf, wall, sleep = time.perf_counter, time.time, time.sleep
        period, spin, late, payload = self.period, self.spin, self.lateness, self.payload
        cpu0 = time.process_time()
        sock.send_multipart([json.dumps({"htype": "header", "msg_number": 0,
                                         "filename": "/tmp/latency.h5"}).encode()])
        start = perf() + self.lead_in
        for i in range(self.frames):
            target = start + i * period
            remaining = target - perf()
            if remaining > spin:
                sleep(remaining - spin)
            now = perf()
            while now < target:
                now = perf()
            late[i] = now - target
            sock.send_multipart([self.header(i, wall()), payload], copy=False)
        sock.send_multipart([json.dumps({"htype": "series_end",
                                         "msg_number": self.frames + 1}).encode()])
        self.cpu = time.process_time() - cpu0


def latency_stats(seconds: np.ndarray[Any, Any]) -> dict[str, float]:
    """Percentiles in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    if ms.size == 0:
        return {"n": 0}
    return {"n": int(ms.size), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "p99.9_ms": float(np.percentile(ms, 99.9)),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


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


def _sink(urls: list[str], n: int, done: Any, ready: Any, latency_file: str | None) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    for url in urls:  # one relay per stream, fair-queued here as a worker's DEALER does
        pull.connect(url)
    ready.set()
    latency: list[float] = []
    for _ in range(n):
        frames = pull.recv_multipart(copy=False)
        if latency_file is not None:
            now = time.time()
            head = json.loads(frames[0].bytes)
            if "timestamps" in head:
                latency.append(now - head["timestamps"]["sent"])
    done.value = time.perf_counter()
    if latency_file is not None:
        np.save(latency_file, np.asarray(latency))


def send_streams(senders: list[Sender], sockets: list[zmq.Socket[Any]]) -> None:
    """Each stream's series from its own thread, as separate detectors send (one: inline)."""
    if len(senders) == 1:
        senders[0](sockets[0])
        return
    threads = [threading.Thread(target=send, args=(sock,), name=f"source{k}")
               for k, (send, sock) in enumerate(zip(senders, sockets, strict=True))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def raw_relay(frames: int, shape: tuple[int, int], paced: PacedSender | None = None,
              tmp: Path | None = None, streams: int = 1) -> dict[str, Any]:
    """``streams`` series, each through its own relay process, all into one sink."""
    if paced is not None and streams != 1:
        raise ValueError("latency mode runs one stream")
    spawn = multiprocessing.get_context("spawn")
    ends = [(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
            for _ in range(streams)]
    relays = [spawn.Process(target=_relay, args=end, daemon=True) for end in ends]
    for relay in relays:
        relay.start()
    done, ready = spawn.Value("d", 0.0), spawn.Event()
    latency_file = str(tmp / "raw_latency.npy") if paced is not None and tmp else None
    sink = spawn.Process(target=_sink, args=([back for _, back in ends],
                                             streams * (frames + 2), done, ready,
                                             latency_file), daemon=True)
    sink.start()
    ctx = zmq.Context()
    pushes = []
    for front, _ in ends:
        pushes.append(ctx.socket(zmq.PUSH))
        pushes[-1].connect(front)
    sources = [StinsSource(f"tcp://127.0.0.1:{free_port()}", shape=shape, n=frames)
               for _ in range(streams)]
    senders = [paced] if paced is not None else [burst_sender(s, frames) for s in sources]
    # Spawned processes take a while to import under load: wait for the sink's connect,
    # then give the TCP handshakes time, so no frame waits for a connection.
    ready.wait(60)
    time.sleep(0.5)
    t0 = time.perf_counter()
    send_streams(senders, pushes)
    sink.join(120)
    seconds = done.value - t0
    cpu_relay = [cpu_seconds(relay.pid or 0) for relay in relays]
    threads = [thread_cpu_seconds(relay.pid or 0) for relay in relays]
    out: dict[str, Any] = {
        "seconds": seconds, "cpu_relay": sum(cpu_relay),
        "cpu_relay_threads": {k: round(sum(t.get(k, 0.0) for t in threads), 2)
                              for k in threads[0]}}
    for relay in relays:
        relay.kill()
    for push in pushes:
        push.close(0)
    for source in sources:
        source.close()
    ctx.term()
    if paced is not None and latency_file is not None:
        out["samples"] = np.load(latency_file)
        out["latency"] = latency_stats(out["samples"])
        out["source_lateness"] = latency_stats(paced.lateness)
    return out
