"""Runs of the recorded captures for tests/test_captures_e2e.py: live, replayed, and in 0.2.

* ``LiveEnsemble``: one ``dranspose-fast local`` (a controller, a reducer and two workers with
  ``tests.compat.proto_classes``, one built-in protocol ingester per capture, each on its
  own ``CaptureSender``); ``scan`` runs one capture as one scan with the ``dump_prefix``
  parameter set and returns the live reducer's publish and the ingester's dump.
* ``run_dr02``: dranspose 0.2's own ingester on the capture and 0.2's replays, in its venv
  (``tests/compat/dr02_ingest.py``).
* ``replay_here``: our replay of a dump through the same classes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from dranspose_fast.dump import read_dump
from tests.captures import CaptureSender, read_capture
from tests.ensemble import ROOT, uniform

WORKER = "tests.compat.proto_classes:ProtoWorker"
REDUCER = "tests.compat.proto_classes:ProtoReducer"
DR02_SCRIPT = ROOT / "tests" / "compat" / "dr02_ingest.py"


@dataclass(frozen=True)
class Case:
    """One recorded protocol: its capture, how it is sent, and where its code lives."""

    stream: str  # the stream name (also the pytest id)
    capture: str
    kind: Literal["PUB", "PUSH"]
    ingester: str  # the built-in name (0.2's class name)
    ingester_module: str  # below dranspose.ingesters / dranspose_fast.ingesters
    parser_module: str  # below the package: the parser the worker uses
    data_module: str  # below the package: the models
    events: int  # events of the scan: series start + data events + series end

    @property
    def dr02_ingester(self) -> str:
        return f"dranspose.ingesters.{self.ingester_module}:{self.ingester}"


CASES = [
    # header, 20 images (each JSON, data, meta as three messages), end
    Case("xspress", "xspress3-dump.cbors", "PUB", "ZmqSubXspressIngester", "zmqsub_xspress3",
         "middlewares.xspress", "data.xspress3", 22),
    # start, 100 messages of 15 rows (one event per row), end
    Case("pcap", "pcap-zmq.cbors", "PUB", "ZmqSubPCAPIngester", "zmqsub_pcap",
         "middlewares.pcap", "data.pcap", 1502),
    # header (9 parts), 3 images (5 parts), end
    Case("eiger", "eiger-small.cbors", "PUSH", "ZmqPullEigerLegacyIngester",
         "zmqpull_eiger_legacy", "middlewares.eiger_legacy", "data.eiger_legacy", 5),
    # heartbeats (dropped), started, 20 running, finished
    Case("contrast", "contrast-dump.cbors", "PUB", "ZmqSubContrastIngester", "zmqsub_contrast",
         "middlewares.contrast", "data.contrast", 22),
    # start, 4 data, end (no middleware in 0.2: the worker validates the JSON)
    Case("albaem", "albaem-dump.cbors", "PUB", "ZmqSubAlbaemIngester", "zmqsub_albaem",
         "data.albaem", "data.albaem", 6),
    # prepare, 2 triggers (start + 2 channels x 3 parts + seq end), end
    Case("lecroy", "maui-02-continuous-3.cbor.gz", "PUB", "ZmqSubLecroyIngester",
         "zmqsub_lecroy", "middlewares.lecroy", "data.lecroy", 4),
]




def run_dr02(python: str, case: Case, tmp: Path, redis_url: str,
             replays: dict[str, Path]) -> dict[str, Any]:
    """0.2's ingester on the capture (sent over a socket), then 0.2's replays.

    Returns ``{"events": n, "dump": path, "publish": {"dr02": ..., label: ...}}``: the
    events 0.2's ``run_source`` yielded into its dump, and each replay's ``publish``.
    """
    dump, out = tmp / f"dr02-{case.stream}.cbors", tmp / f"dr02-{case.stream}.json"
    sender = CaptureSender(case.kind)
    try:
        sending = sender.send_in_thread(read_capture(case.capture))
        cmd = [python, str(DR02_SCRIPT), "--ingester", case.dr02_ingester,
               "--stream", case.stream, "--upstream", sender.url, "--redis", redis_url,
               "--dump", str(dump), "--out", str(out)]
        for label, path in replays.items():
            cmd += ["--replay", f"{label}={path}"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                              timeout=300)
        assert done.returncode == 0, f"0.2's side failed:\n{done.stderr[-4000:]}"
        sending.join(10)
    finally:
        sender.close()
    result: dict[str, Any] = json.loads(out.read_text())
    result["dump"] = dump
    return result


def replay_here(dump: Path, out: Path) -> Any:
    """Our replay of ``dump`` through the proto classes; the publish's summary."""
    import h5py

    from dranspose_fast.replay import replay

    report = replay(WORKER, REDUCER, [dump], nworkers=2, out=out)
    assert report.worker_errors == 0 and report.reducer_errors == 0, report.summary()
    assert not report.input_errors, report.input_errors
    with h5py.File(out, "r") as f:
        assert int(f["finished"][()]) == 1
        return json.loads(f["summary"][()])


def dump_content(path: Path) -> list[tuple[int, dict[str, tuple[str, list[bytes]]]]]:
    """Every record of a dump: (event number, {stream: (typ, frames as bytes)})."""
    return [(m.event_number, {str(n): (d.typ, [bytes(f) for f in d.frames])
                              for n, d in m.streams.items()}) for m in read_dump(path)]


def dump_records(path: Path) -> int | None:
    """Records in a dump, or None while it is missing or being written."""
    try:
        return sum(1 for _ in read_dump(path))
    except Exception:
        return None


def poll(what: str, check: Callable[[], Any], timeout: float, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


class LiveEnsemble:
    """``dranspose-fast local`` with one protocol ingester per case, each on its sender."""

    def __init__(self, cases: list[Case], tmp: Path, redis_url: str) -> None:
        self.cases = {c.stream: c for c in cases}
        self.tmp = tmp
        self.senders = {c.stream: CaptureSender(c.kind) for c in cases}
        self.port, self.reducer_port = free_ports(2)
        self.controller = f"http://127.0.0.1:{self.port}"
        self.reducer = f"http://127.0.0.1:{self.reducer_port}"
        self.log_path = tmp / "local.log"
        env = {k: v for k, v in os.environ.items() if k != "PROTO_CLASSES_IMPL"}
        env.update(PYTHONPATH=str(ROOT), REDIS_URL=redis_url, DFAST_CONFIG_TTL="2",
                   DFAST_CONFIG_INTERVAL="0.2", BUILD_META_FILE=str(tmp / "none.json"))
        cmd = [sys.executable, "-m", "dranspose_fast.cli", "local", "-w", WORKER, "-r", REDUCER,
               "--port", str(self.port), "--reducer-port", str(self.reducer_port)]
        for c in cases:
            cmd += ["--stream", f"{c.stream}={self.senders[c.stream].url}",
                    "--ingesterclass", f"{c.stream}={c.ingester}"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def get(self, path: str) -> Any:
        assert self.proc.poll() is None, f"local exited ({self.proc.returncode})\n{self.log()}"
        return httpx.get(self.controller + path, timeout=10).json()

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            streams = set(self.get("/api/v1/streams"))
            config = self.get("/api/v1/config")
            return (set(self.cases) <= streams and len(config["workers"]) == 2
                    and config.get("reducer") is not None)

        poll("the local ensemble", ready, timeout, self.log)

    def scan(self, case: Case, timeout: float = 120.0) -> tuple[Any, Path]:
        """One scan of ``case``'s capture: (the live publish's summary, our ingester's dump)."""
        folder = self.tmp / f"scan-{case.stream}"
        folder.mkdir()
        prefix = f"{folder}/"
        answer = httpx.post(f"{self.controller}/api/v1/parameter/dump_prefix",
                            content=prefix.encode(), timeout=30)
        assert answer.status_code == 200, answer.text
        answer = httpx.post(f"{self.controller}/api/v1/sequence",
                            json=uniform([case.stream], case.events - 2), timeout=30)
        assert answer.status_code == 200, answer.text
        uid = answer.json()
        sending = self.senders[case.stream].send_in_thread(read_capture(case.capture))
        poll(f"scan {case.stream} to finish", lambda: self.get("/api/v1/progress")["finished"],
             timeout, self.log)
        sending.join(10)
        summary = poll(f"the reducer's publish of {case.stream}",
                       lambda: self._published(case.stream), timeout, self.log)
        dump = folder / f"{case.stream}-ingester-{uid}.cbors"
        poll(f"{dump.name} with {case.events} records (have {sorted(os.listdir(folder))})",
             lambda: dump_records(dump) == case.events, 30, self.log)
        return summary, dump

    def _published(self, stream: str) -> Any:
        import h5pyd

        with h5pyd.File("/", "r", endpoint=self.reducer) as f:
            if int(f["finished"][()]) != 1 or _text(f["streams"][()]) != stream:
                return None
            return json.loads(f["summary"][()])

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -9
        for sender in self.senders.values():
            sender.close()
        return code


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports."""
    from tests.conftest import free_port

    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def first_difference(got: dict[str, Any], want: dict[str, Any]) -> str:
    """A short account of how two publish summaries differ (event keys, first event)."""
    if got == want:
        return "equal"
    extra, lacking = sorted(set(got) - set(want), key=int), sorted(set(want) - set(got), key=int)
    lines = []
    if extra or lacking:
        lines.append(f"{len(got)} events vs {len(want)}; extra {extra[:10]}, "
                     f"missing {lacking[:10]}")
    for key in sorted(set(got) & set(want), key=int):
        if got[key] != want[key]:
            lines.append(f"event {key}:\n  got  {json.dumps(got[key])[:1500]}\n"
                         f"  want {json.dumps(want[key])[:1500]}")
            break
    return "\n".join(lines)
