"""The controller lock is renewed by a keeper process (``controller/lock.py``): a call that holds
the GIL for longer than the TTL does not let a second controller in, and a killed controller's
lock expires within one TTL (its keeper sees the pipe close); the next controller takes over
what the dead one left in Redis (``controller/takeover.py``)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from dranspose_fast.controller import Controller, ControllerSettings
from dranspose_fast.mapping import MappingSequence
from dranspose_fast.runtime.redis_messages import Keys
from tests.conftest import wait_for
from tests.controller_sim import (  # noqa: F401 (fixtures)
    ctrl,
    drive,
    finish_all,
    settings,
    settings_for,
    started_sim,
)
from tests.ensemble import Ensemble

#: A rival that tries to take the lock every 20 ms for argv[2] seconds; prints how often it
#: succeeded (a controller that starts while the lock has lapsed does exactly this).
RIVAL = """
import sys, time, redis
r = redis.Redis.from_url(sys.argv[1])
print("ready", flush=True)
took, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    took += bool(r.set("dfast:controller:lock", b"rival", nx=True, px=2000))
    time.sleep(0.02)
print(took, flush=True)
"""


def hold_the_gil(seconds: float) -> None:
    """One C call that keeps the GIL (``PyDLL`` does not release it), like ``json.loads`` of a
    huge map: no other thread of this process runs meanwhile."""
    ctypes.PyDLL(None).usleep(int(seconds * 1e6))


def test_the_lock_holds_while_one_call_keeps_the_gil_past_its_ttl(
        ctrl: Controller, redis_url: str) -> None:
    rival = subprocess.Popen([sys.executable, "-c", RIVAL, redis_url, "3.5"],
                             stdout=subprocess.PIPE, text=True)
    assert rival.stdout is not None
    assert rival.stdout.readline().strip() == "ready"
    hold_the_gil(3.0)  # lock_ttl is 2 s: a renewing thread of this process could not run
    took = int(rival.stdout.readline())
    rival.wait(10)
    assert took == 0
    assert redis.Redis.from_url(redis_url).get(Keys.LOCK) == str(ctrl.uuid).encode()
    assert not ctrl.lock_lost


def _children(pid: int) -> list[int]:
    """Child processes, whichever thread started them (``/proc`` lists them per thread)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += map(int, (task / "children").read_text().split())
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return True
    return state in "ZX"


def test_a_killed_controllers_lock_expires_and_a_new_one_takes_over(
        redis_url: str, tmp_path: Path) -> None:
    ens = Ensemble(redis_url, tmp_path)
    ens.env.update({"DFAST_LOCK_TTL": "1", "DFAST_LOCK_RETRY": "0.1"})
    try:
        ens.controller()
        r = redis.Redis.from_url(redis_url)
        proc = ens.procs["controller"]
        wait_for(lambda: r.get(Keys.LOCK) is not None, what="the controller's lock")
        wait_for(lambda: _children(proc.pid), what="the keeper process")
        [keeper] = _children(proc.pid)
        owner = r.get(Keys.LOCK)
        time.sleep(1.5)  # past one TTL: the keeper renews it
        assert r.get(Keys.LOCK) == owner
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        killed = time.monotonic()
        wait_for(lambda: _gone(keeper), timeout=2, what="the keeper to exit with its controller")
        wait_for(lambda: r.get(Keys.LOCK) is None, timeout=3, what="the lock to expire")
        assert time.monotonic() - killed < 2.5  # one TTL (1 s) and the polling
        ens.procs.pop("controller")
        second = Controller(settings_for(redis_url, dfast_lock_ttl=1.0))
        second.start()
        try:
            assert r.get(Keys.LOCK) == str(second.uuid).encode()
        finally:
            second.close()
    finally:
        for name in list(ens.procs):  # a failed check leaves no controller behind
            ens.stop(name)


def test_close_stops_the_keeper(settings: ControllerSettings) -> None:
    c = Controller(settings)
    c.start()
    pid = c.lock.keeper_pid
    assert pid is not None and not _gone(pid)
    c.close()
    assert _gone(pid)


@contextmanager
def _killed_mid_scan(redis_url: str, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """A controller process with a running scan of interleaved constraint groups, stopped
    for credit inside two of them and killed with SIGKILL; yields the simulated components
    and the scan's uuid, and stops them all at the end."""
    sim = started_sim(redis_url, "ing-a", ["a"])
    ens = Ensemble(redis_url, tmp_path)
    try:
        ens.env.update({"DFAST_LOCK_TTL": "1", "DFAST_CONFIG_TTL": "2"})
        ens.controller()
        ens.wait("the controller's API", lambda: ens.get("/api/v1/config").status_code == 200)
        assert ens.post("/api/v1/parameter/gain", content=b"7").status_code == 200
        ens.wait("both workers", lambda: len(ens.get("/api/v1/config").json()["workers"]) == 2)
        cells = [[{"constraint": i % 4}] for i in range(100)]  # 4 interleaved groups of 25
        uid = ens.sequence({"parts": {"main": {"a": cells}}, "sequence": ["main"]})
        # the start event goes to both; the head binds group 0 to w0 and group 1 to w1 with
        # their last credit; group 2 finds none: the scan stops with groups 0 and 1 started
        sim.credit(uid, "w0", 2)
        sim.credit(uid, "w1", 2)
        wait_for(lambda: len(sim.events(uid, ["a"])) >= 3, what="events bound")
        time.sleep(0.2)  # nothing more can be emitted
        os.kill(ens.procs.pop("controller").pid, signal.SIGKILL)
        yield sim, uid
    finally:
        for name in list(ens.procs):  # a failed check leaves no controller behind
            ens.stop(name)
        sim.stop()


def test_a_new_controller_resumes_the_scan_where_it_stood(
        redis_url: str, tmp_path: Path) -> None:
    """kill -9 of the controller mid-scan: the next one adopts the parameters and continues
    the scan: every event emitted once, in order, each constraint group on one worker (the
    two groups it had started stay on their workers)."""
    with _killed_mid_scan(redis_url, tmp_path) as (sim, uid):
        emitted = len(sim.events(uid, ["a"]))
        second = Controller(settings_for(redis_url, dfast_lock_ttl=1.0, dfast_lock_timeout=5.0))
        second.start()  # waits for the dead controller's lock to expire
        try:
            assert second.counters["scans_resumed"] == 1
            assert second.scan is not None and str(second.scan.uuid) == uid
            assert second.progress().last_assigned == emitted == 3
            assert second.scan.counters["resumed_bindings"] == 2  # groups 0 and 1 stay
            last = sim.updates()[-1]
            assert str(last.mapping_uuid) == uid and not last.finished
            assert second.get_param("gain") == b"7"
            drive(sim, uid, ["a"], 102)
            finish_all(sim, second, uid, ["a"])
            wait_for(lambda: second.progress().finished, what="the resumed scan to finish")
            events = sim.events(uid, ["a"])  # checks the batches are contiguous and in order
            assert sorted(events) == list(range(102))
            for group in range(4):
                owners = {w for e in range(1 + group, 101, 4) for w in events[e]["a"] or set()}
                assert len(owners) == 1, (group, owners)
            assert second.status().reason == "completed"
        finally:
            second.close()


def test_a_scan_that_cannot_be_resumed_is_ended_with_a_true_reason(
        redis_url: str, tmp_path: Path) -> None:
    """Without its saved map (a scan an older controller started) the scan is ended with
    ``controller restarted``, so the components finish it and the next scan starts cleanly."""
    with _killed_mid_scan(redis_url, tmp_path) as (sim, uid):
        sim.r.delete(Keys.sequence(uid))
        second = Controller(settings_for(redis_url, dfast_lock_ttl=1.0, dfast_lock_timeout=5.0))
        second.start()
        try:
            last = sim.updates()[-1]
            assert str(last.mapping_uuid) == uid and last.finished
            assert last.reason == "controller restarted"
            assert second.get_param("gain") == b"7"
            assert not sim.r.exists(Keys.assigned(uid))
            assert second.counters["scans_ended_by_restart"] == 1
            new = second.set_sequence(MappingSequence.from_uniform(["a"], 4))
            sim.credit(new, "w0", 2)
            sim.credit(new, "w1", 2)
            drive(sim, new, ["a"], 6)  # the 4 events and the start and end broadcasts
            finish_all(sim, second, new, ["a"])
            wait_for(lambda: second.progress().finished, what="the next scan to finish")
        finally:
            second.close()
