"""End-to-end throughput of the distributed pipeline, beside a raw ZeroMQ relay in the same run.

Topology (all on loopback, real processes): Redis, controller, one ingester, K workers and the
reducer; a PUSH source streams a STINS series of N images as fast as the pipeline takes them.
The baseline is the same topology without dranspose: source → ``zmq.proxy`` relay → sink.

By default it runs what a user runs (issue 13, item 1): the ``dranspose-fast`` command of
each role with the CLI's defaults (no ``DFAST_*`` or ``LOG_LEVEL`` in the environment), a
payload written as in dranspose 0.2 (``bench.payload02``), the components started in the
README's order (controller, ingester, workers, reducer), the uniform map POSTed to
``/api/v1/sequence``. The time runs from the source's first send to the reducer's last
``process_result`` (the reducer notes its time in ``publish``, read over its HTTP API after
the scan); the relay is timed from the same first send to its sink's last frame. Each
difference from the project's earlier configuration can be switched on its own:
``--payload trivial``, ``--fast-timings``, ``--order bench``, ``--launch module``,
``--end done-file|controller``; ``--ab="FLAGS"`` interleaves runs of the default (A) and of
the default plus FLAGS (B), each beside its own relay.

    python bench/e2e.py --frames 20000 --shape 64 64 --workers 2 --repeats 3
    python bench/e2e.py --frames 20000 --repeats 5 --ab="--payload trivial"
    python bench/e2e.py --frames 1000 --shape 512 1024 --workers 2 --map batched

Reports medians of the repeats, events/s, GB/s and CPU seconds per process (from /proc).
The machine has 2 cores: with six processes the run is CPU-bound; compare ratios.

Latency mode (``--latency RATE``): the source paces the images at RATE events/s on an absolute
schedule (sleep, then spin the last ``--spin-us``), stamps each header with
``timestamps: {"sent": time.time()}`` just before sending, the workers
(``bench.latency_classes``) return it and the reducer records ``now - sent`` per result. The
same paced series also goes through the raw relay (its sink records the same difference), the
latency floor of the machine. Reports p50/p99/p99.9/max (all images, and those sent after the
first 0.1 s), the share up to the worker's ``process_event`` (``to_worker``), the source's
lateness against its schedule and CPU seconds per process; ``--json out.json`` also writes
each run's samples to ``out.run<N>.npz``::

    python bench/e2e.py --latency 5000 --frames 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.baseline import (  # noqa: E402
    STEADY_AFTER,
    PacedSender,
    burst_sender,
    cpu_seconds,
    fine_timer_slack,
    latency_stats,
    minor_faults,
    raw_relay,
    send_streams,
    thread_cpu_seconds,
)
from bench.latency_classes import LATENCY_FILE_ENV  # noqa: E402
from bench.trivial import DONE_FILE_ENV  # noqa: E402
from dranspose_fast.runtime.curve import ephemeral_environment  # noqa: E402
from tests.conftest import RedisServer, free_port  # noqa: E402
from tests.ensemble import Ensemble, vw  # noqa: E402
from tests.stins_source import StinsSource  # noqa: E402

# === dranspose-fast ===


def start_profiles(procs: dict[str, Any], out: Path, seconds: float,
                   tool: str = "py-spy", event: str = "cpu-clock") -> list[Any]:
    """Profile each component while the series is sent: ``py-spy record`` (Python stacks,
    collapsed, ``out/<component>.txt``) or ``perf record`` (every thread, native frames
    included: libzmq's I/O thread, the kernel's copies; ``out/<component>.data``, read with
    ``perf report -i FILE --sort comm,dso,sym``). These VMs have no hardware counters: perf
    samples a software event, ``cpu-clock`` or another (``page-faults``, with the faulting
    addresses; ``syscalls:sys_enter_mmap``, ...)."""
    out.mkdir(parents=True, exist_ok=True)
    duration = str(max(1, int(seconds)))
    if tool == "perf":
        commands = {name: ["perf", "record", "-q", "-e", event, "-g", "-d",
                           "-o", str(out / f"{name}.data"), "-p", str(proc.pid),
                           "--", "sleep", duration] for name, proc in procs.items()}
    else:
        commands = {name: ["py-spy", "record", "--format", "raw", "-r", "250", "-d", duration,
                           "-o", str(out / f"{name}.txt"), "--pid", str(proc.pid)]
                    for name, proc in procs.items()}
    return [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for command in commands.values()]


#: The environment ``tests/ensemble.py`` sets for tests and that a user does not:
#: short config TTL and interval (``--fast-timings`` keeps them), an explicit log level (the
#: CLI's default is the same INFO) and a build-meta file.
TEST_ONLY_ENV = ("DFAST_CONFIG_TTL", "DFAST_CONFIG_INTERVAL", "LOG_LEVEL", "BUILD_META_FILE")

PAYLOADS = {
    "02": ("bench.payload02:Worker02", "bench.payload02:Reducer02"),
    "trivial": ("bench.trivial:TrivialWorker", "bench.trivial:TrivialReducer"),
}


class UserEnsemble(Ensemble):
    """``tests.ensemble.Ensemble`` with the CLI's defaults and the ``dranspose-fast`` command.

    ``fast_timings`` keeps the tests' settings (``DFAST_CONFIG_TTL=2``,
    ``DFAST_CONFIG_INTERVAL=0.2``, ``LOG_LEVEL=INFO``); ``launch="module"`` runs
    ``python -m dranspose_fast.cli`` as the tests do instead of the installed command.
    Logs go to files in both cases (a user's go to a terminal).
    """

    def __init__(self, redis_url: str, tmp: Path, fast_timings: bool, launch: str) -> None:
        super().__init__(redis_url, tmp)
        if not fast_timings:
            for key in [*TEST_ONLY_ENV, *(k for k in self.env if k.startswith("DFAST_"))]:
                self.env.pop(key, None)
        command = shutil.which("dranspose-fast")
        if launch == "script" and command is None:
            raise SystemExit("dranspose-fast is not on PATH (pip install -e .)")
        self.command = ([command] if launch == "script" and command
                        else [sys.executable, "-m", "dranspose_fast.cli"])
        #: ``--metrics``: the metrics address of every worker and ingester (None: no ports).
        self.metrics_urls: dict[str, str] | None = None

    def spawn(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        if self.metrics_urls is not None and args[0] in ("worker", "ingester"):
            port = free_port()
            args = [*args, "--metrics-port", str(port)]
            self.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with open(log, "wb") as fh:
            proc = subprocess.Popen([*self.command, *args], env={**self.env, **env},
                                    stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = proc
        return proc


class MetricsScraper(threading.Thread):
    """``--metrics``: GET every component's ``/metrics`` every ``period`` seconds, as
    Prometheus does (here from the bench process, on the same 2 cores)."""

    def __init__(self, urls: list[str], period: float = 1.0) -> None:
        super().__init__(name="scraper", daemon=True)
        self.urls, self.period = urls, period
        self.done = threading.Event()
        self.scrapes = self.failures = 0

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.done.wait(self.period):
                for url in self.urls:
                    try:
                        ok = client.get(url).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    self.scrapes += 1
                    self.failures += not ok

    def stop(self) -> dict[str, int]:
        self.done.set()
        self.join(10)
        return {"scrapes": self.scrapes, "failures": self.failures}


def wait_until(ens: Ensemble, what: str, check: Callable[[], bool], poll: float,
               timeout: float) -> None:
    """``Ensemble.wait`` with the polling interval as a setting (``--poll``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in ens.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}) while waiting for "
                                     f"{what}\n{ens.all_logs()}")
        try:
            if check():
                return
        except Exception:  # HTTP errors while a component starts
            pass
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}\n{ens.all_logs()}")


def read_publish(url: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Values of ``publish`` read over the reducer's HTTP API, as a 0.2 user reads them."""
    import h5pyd

    with h5pyd.File("/", "r", endpoint=url) as f:
        return {k: f[k][()] for k in keys}


def pipeline(frames: int, shape: tuple[int, int], workers: int, mapping: str,
             tmp: Path, paced: PacedSender | None = None,
             profile: Path | None = None, cfg: argparse.Namespace | None = None,
             ) -> dict[str, Any]:
    cfg = cfg or argparse.Namespace(payload="02", fast_timings=False, order="readme",
                                    launch="script", end="publish", poll=0.05,
                                    poll_client="reuse", settle=0.0, curve="on",
                                    profiler="py-spy", perf_event="cpu-clock")
    redis = RedisServer(tmp)
    redis.start()
    ens = UserEnsemble(redis.url, tmp, cfg.fast_timings, cfg.launch)
    # a deployment's keys (as `dranspose-fast local` makes them), or CURVE off when asked
    ens.env.update(ephemeral_environment() if getattr(cfg, "curve", "on") == "on"
                   else {"DFAST_CURVE": "off"})
    ens.env.update(item.split("=", 1) for item in getattr(cfg, "set", None) or [])
    if getattr(cfg, "metrics", False):
        ens.metrics_urls = {}
    scraper: MetricsScraper | None = None
    nstreams = getattr(cfg, "ingesters", 1)
    if paced is not None and nstreams != 1:
        raise SystemExit("latency mode runs one stream (--ingesters 1)")
    # one stream per ingester, each from its own source: "eiger", "eiger2", ...
    streams = ["eiger", *(f"eiger{k + 1}" for k in range(1, nstreams))]
    sources = [StinsSource(f"tcp://127.0.0.1:{free_port()}", shape=shape, n=frames)
               for _ in streams]
    source = sources[0]
    latency_file = tmp / "latency.npz"
    ens.env[LATENCY_FILE_ENV] = str(latency_file)
    done_file = tmp / "done.txt"
    if cfg.end == "done-file" or cfg.payload == "trivial":
        ens.env[DONE_FILE_ENV] = str(done_file)
    worker_cls, reducer_cls = (
        ("bench.latency_classes:LatencyWorker", "bench.latency_classes:LatencyReducer")
        if paced is not None else PAYLOADS[cfg.payload])
    names = [f"w{i}" for i in range(workers)]
    if cfg.order == "bench":  # the order tests/ensemble.py's start() and this bench used
        steps = ["controller", "reducer", *names, *streams]
    else:  # README.md's "Live" section: controller, ingester(s), worker(s), reducer
        steps = ["controller", *streams, *names, "reducer"]
    try:
        for step in steps:
            if step == "controller":
                ens.controller()
            elif step == "reducer":
                ens.reducer(reducer_cls)
            elif step in streams:
                ens.ingester(step, sources[streams.index(step)].url)
            else:
                ens.worker(step, worker_cls)
        ens.wait_ready(streams, names, timeout=60)
        span = 10 if mapping == "batched" else 1
        cells = [[vw(i // span)] for i in range(frames)]
        scan = {"parts": {"main": dict.fromkeys(streams, cells)}, "sequence": ["main"]}
        for _ in range(getattr(cfg, "warm_scans", 0)):  # untimed scans, the same processes
            ens.sequence(scan)
            send_streams([burst_sender(s, frames) for s in sources], [s.socket for s in sources])
            wait_until(ens, "a warm-up scan to finish",
                       lambda: ens.get("/api/v1/progress").json()["finished"], cfg.poll, 600)
        ens.sequence(scan)
        if cfg.settle:
            time.sleep(cfg.settle)
        cpu0 = {n: cpu_seconds(p.pid) for n, p in ens.procs.items()}
        threads0 = {n: thread_cpu_seconds(p.pid) for n, p in ens.procs.items()}
        faults0 = {n: minor_faults(p.pid) for n, p in ens.procs.items()}
        spies = (start_profiles(ens.procs, profile, frames * paced.period if paced else 5,
                                cfg.profiler, cfg.perf_event) if profile else [])
        if ens.metrics_urls is not None:
            scraper = MetricsScraper([f"{ens.controller_url}/metrics",
                                      f"{ens.reducer_url}/metrics", *ens.metrics_urls.values()])
            scraper.start()
        t0, wall0 = time.perf_counter(), time.time()
        if paced is not None:
            paced(source.socket)
        else:  # the very senders the raw relay gets: the same source work in both runs
            send_streams([burst_sender(s, frames) for s in sources],
                         [s.socket for s in sources])
        # The bench's own polling runs on the same 2 cores as the pipeline: one kept client
        # (default) or ``httpx.get`` per poll (``--poll-client new``, what
        # ``tests.ensemble.Ensemble.get`` does, a new client each time). ``cpu["bench_wait"]``
        # is what the waiting cost: 0.04 s against 0.07 s per 20 k-event run.
        cpu_wait0 = time.process_time()
        if cfg.poll_client == "reuse":
            with httpx.Client(base_url=ens.controller_url, timeout=10) as client:
                wait_until(ens, "the scan to finish",
                           lambda: client.get("/api/v1/progress").json()["finished"],
                           cfg.poll, 600)
        else:
            wait_until(ens, "the scan to finish",
                       lambda: ens.get("/api/v1/progress").json()["finished"], cfg.poll, 600)
        seconds = time.perf_counter() - t0
        cpu_wait = time.process_time() - cpu_wait0
        scraped = scraper.stop() if scraper is not None else None
        progress = ens.get("/api/v1/progress").json()
        cpu = {n: round(cpu_seconds(p.pid) - cpu0[n], 2) for n, p in ens.procs.items()}
        cpu["bench_wait"] = round(cpu_wait, 3)
        faults = {n: minor_faults(p.pid) - faults0[n] for n, p in ens.procs.items()}
        threads = {n: {k: round(v - threads0[n][k], 2)
                       for k, v in thread_cpu_seconds(p.pid).items()}
                   for n, p in ens.procs.items()}
        for spy in spies:
            spy.wait(60)
        status = ens.get("/api/v1/status").json()
        out: dict[str, Any] = {"seconds": seconds, "progress": progress, "cpu": cpu,
                               "cpu_threads": threads, "minor_faults": faults,
                               "seconds_to_controller": seconds,
                               "status_keys": sorted(status), "scraped": scraped}
        if paced is None:
            # Timed to the last result reduced, as the relay is timed to its sink's last frame
            # (the controller notices the end later and the REST polling adds up to --poll).
            # The reducer notes the instant itself; how it is read afterwards (publish over
            # HTTP or a file written at finish) does not change it.
            if cfg.payload == "02" and cfg.end != "done-file":
                def counted() -> bool:
                    got = read_publish(ens.reducer_url, ("count", "first_result",
                                                         "last_result"))
                    out["published"] = {k: float(v) for k, v in got.items()}
                    return (int(got["count"]) >= progress.get("completed_events", 0) > 0
                            and float(got["last_result"]) > wall0)  # not a warm-up scan's
                wait_until(ens, "the reducer's publish", counted, 0.05, 30)
                last = out["published"]["last_result"]
                out["seconds_to_first_result"] = out["published"]["first_result"] - wall0
            else:
                ens.wait("the reducer's finish", done_file.exists, timeout=30)
                last = float(done_file.read_text())
            out["seconds_to_reducer"] = last - wall0
            out["seconds"] = (seconds if cfg.end == "controller"
                              else out["seconds_to_reducer"])
        else:
            cpu["source"] = round(paced.cpu, 2)
            ens.wait("the reducer's latency file", latency_file.exists, timeout=30)
            with np.load(latency_file) as saved:
                out["samples"] = {k: saved[k] for k in saved.files}
            out["latency"] = latency_stats(out["samples"]["latency"])
            # Images sent after the first STEADY_AFTER seconds: the scan start left out
            # (image i is event i + 1, the series header being event 0).
            first = 1 + int(STEADY_AFTER / paced.period)
            steady = out["samples"]["events"] >= first
            out["latency_steady"] = latency_stats(out["samples"]["latency"][steady])
            out["to_worker"] = latency_stats(out["samples"]["to_worker"])
            out["lateness_samples"] = paced.lateness
            out["source_lateness"] = latency_stats(paced.lateness)
        return out
    finally:
        if scraper is not None:
            scraper.stop()
        for each in sources:
            each.close()
        # Each component on its own: one that does not stop on SIGTERM (killed, reported)
        # neither hides the error that ended the run nor leaves the others running.
        for name in reversed(list(ens.procs)):
            try:
                ens.stop(name)
            except AssertionError as exc:
                print(f"warning: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
        redis.stop()


# === main ===


def _one_run(args: argparse.Namespace, shape: tuple[int, int], label: str,
             r: int) -> dict[str, Any]:
    """The relay, then the pipeline, back to back: one same-run pair."""
    events = args.frames + 2
    for attempt in range(3):
        base = raw_relay(args.frames, shape, streams=args.ingesters)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                ours = pipeline(args.frames, shape, args.workers, args.map, Path(tmp),
                                profile=args.profile / f"{label}run{r}" if args.profile
                                else None, cfg=args)
            break
        except AssertionError as exc:  # a component failed to start (a port taken, ...)
            print(f"{label}run {r}: attempt {attempt} failed, again: "
                  f"{str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
    else:
        raise SystemExit(f"{label}run {r} failed three times")
    print(f"{label}run {r}: ours {events / ours['seconds']:,.0f} events/s (to the reducer's "
          f"last result: {events / ours['seconds_to_reducer']:,.0f}, until the controller "
          f"reports: {events / ours['seconds_to_controller']:,.0f}), raw relay "
          f"{events / base['seconds']:,.0f} frames/s, ratio "
          f"{base['seconds'] / ours['seconds']:.2f}; cpu {ours['cpu']}; libzmq I/O threads "
          f"{ {n: t['zmq_io'] for n, t in ours['cpu_threads'].items()} }; minor faults "
          f"{ours['minor_faults']}; relay "
          f"{base['cpu_relay_threads']}; load {os.getloadavg()[0]:.2f}", flush=True)
    return {"baseline": base, "ours": ours, "ratio": base["seconds"] / ours["seconds"],
            "load": os.getloadavg()}


def _summary(args: argparse.Namespace, shape: tuple[int, int],
             runs: list[dict[str, Any]]) -> dict[str, Any]:
    nbytes = shape[0] * shape[1] * 2
    events = args.frames + 2
    ours_s = statistics.median(r["ours"]["seconds"] for r in runs)
    base_s = statistics.median(r["baseline"]["seconds"] for r in runs)
    ratios = [r["ratio"] for r in runs]
    rates = [events / r["ours"]["seconds"] for r in runs]
    return {
        "frames": args.frames, "shape": shape, "workers": args.workers, "map": args.map,
        "ingesters": args.ingesters,
        "config": {k: getattr(args, k) for k in ("payload", "fast_timings", "order", "launch",
                                                 "end", "poll", "poll_client", "settle",
                                                 "metrics", "curve", "set")},
        "events_per_s": events / ours_s, "events_per_s_range": [min(rates), max(rates)],
        "GB_per_s": args.ingesters * args.frames * nbytes / ours_s / 1e9,
        "raw_frames_per_s": events / base_s,
        "raw_GB_per_s": args.ingesters * args.frames * nbytes / base_s / 1e9,
        "ratio_to_raw": base_s / ours_s, "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)], "runs": runs,
    }


def _throughput(args: argparse.Namespace, shape: tuple[int, int]) -> dict[str, Any]:
    runs = [_one_run(args, shape, "", r) for r in range(args.repeats)]
    return _summary(args, shape, runs)


def _ab(args: argparse.Namespace, b_args: argparse.Namespace,
        shape: tuple[int, int]) -> dict[str, Any]:
    """A, B, A, B, ...: each run beside its own relay, the same machine state for both."""
    a_runs: list[dict[str, Any]] = []
    b_runs: list[dict[str, Any]] = []
    for r in range(args.repeats):
        a_runs.append(_one_run(args, shape, "A ", r))
        b_runs.append(_one_run(b_args, shape, "B ", r))
    a, b = _summary(args, shape, a_runs), _summary(b_args, shape, b_runs)
    pairs = [rb["ours"]["seconds"] / ra["ours"]["seconds"]
             for ra, rb in zip(a_runs, b_runs, strict=True)]
    return {"A": a, "B": b, "B_flags": args.ab,
            "B_seconds_over_A": statistics.median(pairs),
            "B_seconds_over_A_range": [min(pairs), max(pairs)]}


def _fmt(stats: dict[str, float]) -> str:
    if not stats.get("n"):
        return "no samples"
    return (f"p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms, "
            f"max {stats['max_ms']:.3f} ms (n={stats['n']})")


def _median_stats(all_stats: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in all_stats) for k in all_stats[0]}


def _latency(args: argparse.Namespace, shape: tuple[int, int]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            paced = PacedSender(shape, args.frames, args.latency, args.spin_us, args.lead_in)
            base = raw_relay(args.frames, shape, paced, Path(tmp))
            paced = PacedSender(shape, args.frames, args.latency, args.spin_us, args.lead_in)
            ours = pipeline(args.frames, shape, args.workers, args.map, Path(tmp), paced,
                            args.profile / f"run{r}" if args.profile else None, cfg=args)
        samples = {**ours.pop("samples"), "lateness": ours.pop("lateness_samples"),
                   "raw_latency": base.pop("samples")}
        if args.json:  # the raw samples beside the summary, for plots
            np.savez(args.json.with_suffix(f".run{r}.npz"), **samples)
        runs.append({"baseline": base, "ours": ours, "load": os.getloadavg()})
        print(f"run {r}: ours {_fmt(ours['latency'])}; after {STEADY_AFTER} s "
              f"{_fmt(ours['latency_steady'])}; raw relay {_fmt(base['latency'])}; "
              f"source late p99 {ours['source_lateness']['p99_ms'] * 1e3:.0f} µs; "
              f"cpu {ours['cpu']}; load {os.getloadavg()[0]:.2f}", flush=True)
        if ours["latency"]["n"] != args.frames:
            print(f"  warning: {ours['latency']['n']} results for {args.frames} images")
    return {
        "frames": args.frames, "shape": shape, "workers": args.workers, "map": args.map,
        "rate": args.latency, "spin_us": args.spin_us, "timer_slack_1us": fine_timer_slack(),
        "latency_ms": _median_stats([r["ours"]["latency"] for r in runs]),
        "latency_steady_ms": _median_stats([r["ours"]["latency_steady"] for r in runs]),
        "to_worker_ms": _median_stats([r["ours"]["to_worker"] for r in runs]),
        "raw_latency_ms": _median_stats([r["baseline"]["latency"] for r in runs]),
        "source_lateness_ms": _median_stats([r["ours"]["source_lateness"] for r in runs]),
        "cpu_s": _median_stats([r["ours"]["cpu"] for r in runs]),
        "wall_s": statistics.median(r["ours"]["seconds"] for r in runs),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--shape", type=int, nargs=2, default=(64, 64))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ingesters", type=int, default=1,
                        help="streams, each from its own source through its own ingester "
                             "(the relay: one relay process per stream into one sink)")
    parser.add_argument("--map", choices=["uniform", "batched"], default="uniform")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=float, default=None, metavar="RATE",
                        help="latency mode: pace the source at RATE events/s")
    parser.add_argument("--spin-us", type=float, default=40.0,
                        help="latency mode: busy-wait this long before each send deadline")
    parser.add_argument("--lead-in", type=float, default=0.01,
                        help="latency mode: seconds between the series header and image 0")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy record every component while the series is sent "
                             "(collapsed stacks in DIR/run<N>/<component>.txt)")
    parser.add_argument("--profiler", choices=["py-spy", "perf"], default="py-spy",
                        help="--profile's tool: py-spy (Python stacks) or perf (every thread, "
                             "native frames: DIR/run<N>/<component>.data)")
    parser.add_argument("--perf-event", default="cpu-clock", metavar="EVENT",
                        help="--profiler perf: the event sampled (default cpu-clock; e.g. "
                             "page-faults, syscalls:sys_enter_mmap)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    user = parser.add_argument_group(
        "what runs (default: what a user runs; each flag restores one difference of the "
        "project's earlier configuration)")
    user.add_argument("--payload", choices=sorted(PAYLOADS), default="02",
                      help="02: bench.payload02, classes written as in dranspose 0.2 (dict "
                           "results, publish); trivial: bench.trivial (**kwargs, int results)")
    user.add_argument("--fast-timings", action="store_true",
                      help="the tests' environment: DFAST_CONFIG_TTL=2, "
                           "DFAST_CONFIG_INTERVAL=0.2, LOG_LEVEL=INFO (default: none set, "
                           "the CLI's 10 s and 1.3 s)")
    user.add_argument("--order", choices=["readme", "bench"], default="readme",
                      help="readme: controller, ingester, workers, reducer; bench: controller, "
                           "reducer, workers, ingester")
    user.add_argument("--launch", choices=["script", "module"], default="script",
                      help="script: the dranspose-fast command; module: python -m "
                           "dranspose_fast.cli")
    user.add_argument("--end", choices=["publish", "done-file", "controller"],
                      default="publish",
                      help="publish: the reducer's last process_result, noted in publish and "
                           "read over HTTP after the scan; done-file: the same instant written "
                           "to a file at finish; controller: until the controller reports the "
                           "scan finished")
    user.add_argument("--poll", type=float, default=0.05,
                      help="seconds between the bench's polls of /api/v1/progress during a run")
    user.add_argument("--poll-client", choices=["reuse", "new"], default="reuse",
                      help="reuse: one HTTP client for the polls; new: httpx.get per poll "
                           "as tests/ensemble.py does")
    user.add_argument("--warm-scans", type=int, default=0, metavar="N",
                      help="run N untimed scans of the same size on the same processes "
                           "before the timed one (default 0: the timed scan is the first of "
                           "freshly started components)")
    user.add_argument("--settle", type=float, default=0.0,
                      help="seconds between the sequence POST's answer and the first send")
    user.add_argument("--curve", choices=["on", "off"], default="on",
                      help="CURVE on the data sockets (default on, with keys made for the run, "
                           "as `local` makes them) or DFAST_CURVE=off")
    user.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                      help="an environment variable for every component (repeat for more), "
                           "e.g. --set DFAST_CREDIT_WINDOW=1024")
    user.add_argument("--metrics", action="store_true",
                      help="give the workers and the ingester a metrics port and scrape every "
                           "component's /metrics every second during the run")
    parser.add_argument("--ab", default=None, metavar="FLAGS",
                        help="interleave runs of these settings (A) and of them plus FLAGS (B)")
    args = parser.parse_args()
    shape = (args.shape[0], args.shape[1])
    if args.ab:
        b_args = parser.parse_args([*sys.argv[1:], *shlex.split(args.ab)])
        result = _ab(args, b_args, shape)
        for key in ("A", "B"):
            print(key, json.dumps({k: v for k, v in result[key].items() if k != "runs"}))
        print(json.dumps({k: result[k] for k in ("B_flags", "B_seconds_over_A",
                                                  "B_seconds_over_A_range")}))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
        return
    if args.latency:
        summary = _latency(args, shape)
    else:
        summary = _throughput(args, shape)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
