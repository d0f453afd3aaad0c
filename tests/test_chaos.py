"""kill -9 of a random component at a random moment of a scan, with real processes.

Each case is one seed (in the test id, and printed with its plan): the seed picks how long
each image takes, when the kill comes (after 5 to 35 of the 60 images are done), which
worker dies and how long the component stays dead. The component cycles with the seed:
controller, reducer, ingester, a worker back within the config TTL, a worker back after it.
Every case checks that the scan's totals add up (images sent = reduced + counted losses: a
restarted ingester counts what its dead process lost; a restarted reducer ends the scan and
counts the results not in its publish), that ``finished`` and ``reason`` say so, and that the
next scan works.

The README's test command runs seeds 0-4 (one per component); ``DFAST_CHAOS_SEEDS=20`` runs
seeds 0-19 (README, "The tests").
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from tests.ensemble import Ensemble, uniform
from tests.stins_source import StinsSource

N = 60
IMAGES = set(range(1, N + 1))  # event i + 1 is frame i; 0 and N + 1: series start and end
WORKERS = ["w0", "w1", "w2"]
KINDS = ["controller", "reducer", "ingester", "worker-soon", "worker-late"]
TTL = 2.0  # the ensemble's config TTL
SEEDS = range(int(os.environ.get("DFAST_CHAOS_SEEDS", "5")))


@dataclass(frozen=True)
class Plan:
    seed: int
    kind: str
    victim: str
    after: int  # images completed when the kill comes
    dead: float  # seconds before the restart
    work_ms: int  # per event, in the workers
    send_ms: int  # between two images, at the detector

    @classmethod
    def of(cls, seed: int) -> Plan:
        rng = random.Random(seed)
        kind = KINDS[seed % len(KINDS)]
        victim = {"controller": "controller", "reducer": "reducer",
                  "ingester": "eiger-ingester"}.get(kind, rng.choice(WORKERS))
        dead = {"worker-soon": rng.uniform(0.0, 0.5 * TTL),
                "worker-late": TTL + rng.uniform(0.5, 1.5)}.get(kind, rng.uniform(0.0, 1.5))
        return cls(seed, kind, victim, rng.randint(5, 35), round(dead, 2),
                   rng.randint(10, 40), rng.randint(30, 50))


def _service(ens: Ensemble, name: str) -> str | None:
    """The service uuid of a component's config (the controller: its API answering)."""
    if name == "controller":
        try:
            return "up" if ens.get("/api/v1/status").status_code == 200 and ens.procs.get(
                "controller") is not None else None
        except Exception:
            return None
    config = ens.get("/api/v1/config").json()
    found = [c for c in config["ingesters"] + config["workers"] + [config["reducer"] or {}]
             if c.get("name") == name]
    return found[0]["service_uuid"] if found else None


def _images(published: dict[str, Any]) -> Counter[int]:
    return Counter(r["event"] for r in published["records"] if r["event"] in IMAGES)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed={s}-{KINDS[s % len(KINDS)]}")
def test_kill_a_component_mid_scan(ens: Ensemble, source: StinsSource, seed: int) -> None:
    plan = Plan.of(seed)
    print("chaos plan:", plan)  # shown with the failure
    ens.env["DFAST_LOCK_TTL"] = "1"
    ens.controller()
    ens.reducer()
    for name in WORKERS:
        ens.worker(name, DFAST_CREDIT_WINDOW="8")
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], WORKERS)
    ens.post("/api/v1/parameter/delay_ms", content=str(plan.work_ms).encode())
    uid = ens.sequence(uniform(["eiger"], N))
    sender = source.send_series_in_thread(N, delay=plan.send_ms / 1000)
    ens.wait("the kill moment", lambda: ens.get("/api/v1/progress").json()[
        "completed_events"] >= plan.after, timeout=60)
    before = None if plan.victim == "controller" else _service(ens, plan.victim)
    ens.kill(plan.victim)
    time.sleep(plan.dead)
    ens.respawn(plan.victim)
    ens.wait(f"{plan.victim} back", lambda: _service(ens, plan.victim) not in (None, before))
    if plan.kind == "reducer":
        ens.wait("the scan to end", lambda: ens.get("/api/v1/status").json()["finished"],
                 timeout=60)
    else:
        assert ens.wait_finished(timeout=90)["finished"]
    sender.join(60)
    status = ens.get("/api/v1/status").json()
    assert status["mapping_uuid"] == uid

    if plan.kind == "reducer":
        assert status["reason"] == "reducer restarted", status
        in_publish = len(ens.published()["records"])

        def adds_up() -> bool:  # the configs catch up within a few config intervals
            now = ens.get("/api/v1/status").json()
            sent = sum(w["results"] for w in now["workers"].values())
            return in_publish + now["counters"]["results_not_in_publish"] == sent

        ens.wait("sent = in publish + not in publish", adds_up, timeout=15)
        assert ens.get("/api/v1/status").json()["counters"]["results_not_in_publish"] > 0
    elif plan.kind == "ingester":
        loss = status["lost_upstream"].get("eiger", {"events": 0, "first_events": [],
                                                     "exact": True})
        reduced = _images(ens.published())
        assert max(reduced.values()) == 1
        assert loss["exact"] and not set(loss["first_events"]) & set(reduced)
        assert len(reduced) + loss["events"] == N, (len(reduced), loss)  # sent = reduced + lost
        assert status["dropped"].get("worker.dropped_lost_upstream", 0) == loss["events"]
        expected = "completed" if not loss["events"] else (
            f"completed; {loss['events']} events lost upstream in stream eiger "
            "(ingester restart)")
        assert status["reason"] == expected
    else:  # controller, worker: nothing may be lost
        assert status["reason"] == "completed", status
        reduced = _images(ens.published())
        assert set(reduced) == IMAGES, sorted(IMAGES - set(reduced))
        assert max(reduced.values()) == 1, [e for e, n in reduced.items() if n > 1]
        assert status["dropped_total"] == 0, {
            c: {k: v for k, v in vals.items() if "dropped" in k and v}
            for c, vals in status["components"].items()}
        if plan.kind == "controller":
            assert status["counters"]["scans_resumed"] == 1

    ens.post("/api/v1/parameter/delay_ms", content=b"0")
    ens.sequence(uniform(["eiger"], 5))
    source.send_series(5)
    assert ens.wait_finished()["finished"]
    after = ens.get("/api/v1/status").json()
    assert after["reason"] == "completed" and after["lost_upstream"] == {}
