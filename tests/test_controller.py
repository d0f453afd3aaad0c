"""The controller against a real Redis, with ingesters, workers and reducer simulated *through
Redis itself*: their config keys, credit and reduced entries, and reads of the assigned stream.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
import redis

from dranspose_fast.controller import (
    Controller,
    ControllerLockError,
    ControllerSettings,
    RequestError,
)
from dranspose_fast.mapping import MappingSequence
from dranspose_fast.parameters import IntParameter, load_parameter_file
from dranspose_fast.runtime.redis_messages import (
    Keys,
)
from tests.conftest import RedisServer, wait_for
from tests.controller_sim import (  # noqa: F401 (fixtures)
    Sim,
    ctrl,
    drive,
    finish_all,
    settings,
    settings_for,
    started_sim,
)


@pytest.fixture
def sim(redis_url: str) -> Iterator[Sim]:
    s = started_sim(redis_url, "ing-a", ["a", "b"])
    try:
        yield s
    finally:
        s.stop()


# === lock and teardown ===


def test_second_controller_is_refused_until_the_first_closes(settings: ControllerSettings,
                                                             redis_url: str) -> None:
    first = Controller(settings)
    first.start()
    r = redis.Redis.from_url(redis_url)
    assert r.get(Keys.LOCK) == str(first.uuid).encode()
    second = Controller(settings)
    t0 = time.monotonic()
    with pytest.raises(ControllerLockError, match="another controller .* holds dfast:contr"):
        second.start()
    assert time.monotonic() - t0 >= 0.4  # it retried for lock_timeout
    second.close()
    first.close()
    third = Controller(settings)
    third.start()
    assert r.get(Keys.LOCK) == str(third.uuid).encode()
    third.close()
    assert r.get(Keys.LOCK) is None


def test_lock_outlives_its_ttl_while_held(ctrl: Controller, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    time.sleep(2.5)  # lock_ttl is 2 s: renewal must have happened
    assert r.get(Keys.LOCK) == str(ctrl.uuid).encode()


def test_lock_is_renewed_while_the_controller_is_busy(ctrl: Controller,
                                                     redis_url: str) -> None:
    """A long request (a large map being parsed and bound holds the controller's locks) must
    not let the lock expire: its renewal takes none of them."""
    r = redis.Redis.from_url(redis_url)
    with ctrl._lock, ctrl._post_lock, ctrl._cfg_lock:
        time.sleep(2.5)  # lock_ttl is 2 s
        assert r.get(Keys.LOCK) == str(ctrl.uuid).encode()


def test_a_controller_that_lost_its_lock_stops_and_leaves_the_keys(
        settings: ControllerSettings, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    first = Controller(settings)
    called: list[bool] = []
    first.on_lock_lost = lambda: called.append(True)
    first.start()
    # its lock expired (a stopped VM, say) and a second controller took it
    r.set(Keys.LOCK, b"second-controller")
    r.xadd(Keys.UPDATES, {"d": b"{}"})  # ...and published its first update
    wait_for(lambda: first.stop_event.is_set(), what="the first controller to stop")
    assert first.lock_lost and called == [True] and first.lock.lost == 1
    first.close()
    assert r.get(Keys.LOCK) == b"second-controller"  # the new owner's keys stay
    assert r.exists(Keys.UPDATES)


def test_close_deletes_the_controller_keys(settings: ControllerSettings, sim: Sim) -> None:
    c = Controller(settings)
    c.start()
    c.set_param("p", b"1")
    sim.r.set(Keys.description("p"), IntParameter(name="p").model_dump_json())
    uid = c.set_sequence(MappingSequence.from_uniform(["a"], 3))
    sim.credit(uid, "w0", 10)
    sim.credit(uid, "w1", 10)
    wait_for(lambda: sim.batches(uid), what="a batch")
    sim.reduce(uid, {})
    c.close()
    sim.stop()
    r = redis.Redis.from_url(c.settings.redis_dsn.unicode_string())
    left = {k.decode() for k in r.keys("*")}
    assert not {k for k in left if not k.startswith("dfast:config:") and k != Keys.LOGS}, left


# === mapping upload and validation ===


def test_unavailable_streams_and_too_few_workers(ctrl: Controller, sim: Sim) -> None:
    with pytest.raises(RequestError, match=r"streams \{'zz'\} not available") as err:
        ctrl.set_sequence(MappingSequence.from_uniform(["a", "zz"], 2))
    assert err.value.status == 400
    three = {"a": [[{"constraint": 1}, {"constraint": 2}, {"constraint": 3}]]}
    with pytest.raises(RequestError, match="only 2 workers available, but 3 required"):
        ctrl.set_sequence(MappingSequence.from_map(three))


def test_streams_need_every_worker_connected(ctrl: Controller, redis_url: str) -> None:
    s = Sim(redis_url)
    s.add_ingester("i1", ["a"])
    s.add_ingester("i2", ["b"])
    s.add_worker("w0", ingesters=["i1", "i2"])
    s.add_worker("w1", ingesters=["i1"])
    s.add_reducer()
    s.start()
    try:
        assert ctrl.configs(max_age=0).get_streams() == ["a"]
        with pytest.raises(RequestError, match=r"\{'b'\} not available"):
            ctrl.set_sequence(MappingSequence.from_uniform(["b"], 2))
    finally:
        s.stop()


def test_invalid_configs_are_counted_and_skipped(ctrl: Controller, sim: Sim) -> None:
    sim.r.set(Keys.config("worker", "broken"), b'{"name": "broken", "tags": 5}')
    sim.r.set(Keys.config("gizmo", "x"), b"{}")
    cfg = ctrl.configs(max_age=0)
    assert sorted(w.name for w in cfg.workers) == ["w0", "w1"]
    assert ctrl.counters["invalid_configs"] == 2
    ctrl.configs(max_age=0)
    assert ctrl.status().counters["invalid_configs"] == 2  # a gauge, not a running sum
    sim.r.delete(Keys.config("worker", "broken"), Keys.config("gizmo", "x"))
    ctrl.configs(max_age=0)
    assert ctrl.counters["invalid_configs"] == 0


def test_post_waits_for_every_component_then_503_names_the_missing(ctrl: Controller,
                                                                   sim: Sim) -> None:
    sim.frozen.add("w1")
    t0 = time.monotonic()
    with pytest.raises(RequestError, match="not taken within 3 s by: worker w1") as err:
        ctrl.set_sequence(MappingSequence.from_uniform(["a"], 2))
    assert err.value.status == 503
    assert time.monotonic() - t0 >= 2.9
    sim.frozen.clear()
    uid = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 2))
    cfg = ctrl.configs(max_age=0)
    assert {w.mapping_uuid for w in cfg.workers} == {uid}
    assert cfg.reducer is not None and cfg.reducer.mapping_uuid == uid
    assert sim.updates()[-1].mapping_uuid == uid


# === binding: batches and masks ===


def test_uniform_map_round_robin_batches(ctrl: Controller, sim: Sim) -> None:
    uid = ctrl.set_sequence(MappingSequence.from_uniform(["a", "b"], 40))
    up = sim.updates()[-1]
    assert up.streams == ["a", "b"] and not up.finished
    sim.credit(uid, "w0", 8)
    sim.credit(uid, "w1", 8)
    events = wait_for(lambda: (e := sim.events(uid, ["a", "b"])) and len(e) >= 17 and e,
                      what="first batches")
    # event 0 is the start broadcast
    assert events[0] == {"a": {"w0", "w1"}, "b": {"w0", "w1"}}
    for evn in range(1, len(events)):
        ws = events[evn]["a"]
        assert ws is not None and len(ws) == 1 and events[evn]["b"] == ws
    # credits bound what a worker holds: window + the head broadcast
    got = sim.received(uid, ["a", "b"])
    assert all(len(evs) <= 9 for evs in got.values())
    # processing frees credits: the rest of the scan flows
    total = 42
    drive(sim, uid, ["a"], total)
    events = sim.events(uid, ["a"])
    assert events[total - 1]["a"] == {"w0", "w1"}
    assert sum(1 for e in range(1, total - 1) if events[e]["a"] == {"w0"}) > 5
    assert sum(1 for e in range(1, total - 1) if events[e]["a"] == {"w1"}) > 5
    # not finished: nothing reduced yet (and w0/w1 did not report their last events)
    assert not ctrl.progress().finished


def test_constraint_spans_go_to_one_worker(ctrl: Controller, sim: Sim) -> None:
    cells = [[{"tags": ["generic"], "constraint": i // 10}] for i in range(40)]
    seq = MappingSequence({"m": {"a": cells, "b": cells}}, ["m"])
    uid = ctrl.set_sequence(seq)
    sim.credit(uid, "w0", 3)
    sim.credit(uid, "w1", 3)
    drive(sim, uid, ["a", "b"], 42)
    events = sim.events(uid, ["a", "b"])
    for group in range(4):
        owners = {frozenset(events[1 + group * 10 + k]["a"] or ()) for k in range(10)}
        assert len(owners) == 1 and len(next(iter(owners))) == 1
        assert all(events[1 + group * 10 + k]["b"] == events[1 + group * 10]["a"]
                   for k in range(10))
    assert {next(iter(events[1 + g * 10]["a"] or ())) for g in range(4)} == {"w0", "w1"}


def test_broadcast_tags_discard_and_null(ctrl: Controller, redis_url: str) -> None:
    s = Sim(redis_url)
    s.add_ingester("ing", ["a", "b"])
    s.add_worker("gen")
    s.add_worker("spec", tags={"generic", "special"})
    s.add_reducer()
    s.start()
    try:
        seq = MappingSequence({"m": {
            "a": [[{"tags": ["special"], "constraint": None}],
                  [{"tags": ["special"], "constraint": 7}], [], [{"constraint": 1}]],
            "b": [[{"constraint": None}], None, [{"constraint": 5}], [{"constraint": 1}]],
        }}, ["m"], all_wrap=False)
        uid = ctrl.set_sequence(seq)
        s.credit(uid, "gen", 10)
        s.credit(uid, "spec", 10)
        ev = wait_for(lambda: (e := s.events(uid, ["a", "b"])) and len(e) == 4 and e,
                      what="4 events")
        assert ev[0] == {"a": {"spec"}, "b": {"gen", "spec"}}
        assert ev[1] == {"a": {"spec"}, "b": None}
        assert ev[2]["a"] == set() and ev[2]["b"] is not None and len(ev[2]["b"]) == 1
        assert ev[3]["a"] == ev[3]["b"] and len(ev[3]["a"] or ()) == 1
    finally:
        s.stop()


# === finish, stop, new mapping ===


def test_finish_needs_every_result_reduced(ctrl: Controller, sim: Sim) -> None:
    uid = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 6))
    sim.credit(uid, "w0", 20)
    sim.credit(uid, "w1", 20)
    wait_for(lambda: len(sim.events(uid, ["a"])) == 8, what="all events")
    got = sim.received(uid, ["a"])
    for w, evs in got.items():
        sim.credit(uid, w, 0, processed=len(evs), results=len(evs))
    wait_for(lambda: ctrl.status().workers["w1"].processed == len(got["w1"]), what="credits")
    time.sleep(0.2)
    assert not ctrl.progress().finished and not sim.updates()[-1].finished
    sim.reduce(uid, {"w0": len(got["w0"]), "w1": len(got["w1"]) - 1})
    time.sleep(0.2)
    assert not ctrl.progress().finished
    sim.reduce(uid, {"w0": len(got["w0"]), "w1": len(got["w1"])})
    wait_for(lambda: ctrl.progress().finished, what="finish")
    finished = [u for u in sim.updates() if u.finished]
    assert len(finished) == 1 and finished[0].mapping_uuid == uid and finished[0].reason is None
    p = ctrl.progress()
    assert (p.last_assigned, p.completed_events, p.total_events) == (8, 8, 8)
    assert ctrl.status().reason == "completed"
    time.sleep(0.2)
    assert len([u for u in sim.updates() if u.finished]) == 1  # once


def test_stop_ends_the_scan(ctrl: Controller, sim: Sim) -> None:
    uid = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 100))
    assert ctrl.stop()
    last = sim.updates()[-1]
    assert last.finished and last.reason == "stopped" and last.mapping_uuid == uid
    assert ctrl.progress().finished and ctrl.status().reason == "stopped"
    assert not ctrl.stop()


def test_new_mapping_mid_scan_replaces_the_old(ctrl: Controller, sim: Sim) -> None:
    old = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 100))
    sim.credit(old, "w0", 5)
    sim.credit(old, "w1", 5)
    wait_for(lambda: sim.batches(old), what="old batches")
    new = ctrl.set_sequence(MappingSequence.from_uniform(["b"], 3))
    assert new != old
    assert not sim.r.exists(Keys.assigned(old), Keys.credits(old))
    last = sim.updates()[-1]
    assert last.mapping_uuid == new and not last.finished and last.streams == ["b"]
    sim.credit(old, "w0", 50)  # stale: nobody reads the old stream any more
    sim.credit(new, "w0", 10)
    sim.credit(new, "w1", 10)
    wait_for(lambda: len(sim.events(new, ["b"])) == 5, what="new scan events")
    assert not sim.r.exists(Keys.assigned(old))
    assert ctrl.status().mapping_uuid == new


def test_reactive_open_sequence_append_and_close(ctrl: Controller, sim: Sim) -> None:
    seq = MappingSequence({"p": {"a": [[{"constraint": 0}], [{"constraint": 1}]]}}, [],
                          closed=False)
    uid = ctrl.set_sequence(seq)
    assert ctrl.progress().total_events is None
    sim.credit(uid, "w0", 50)
    sim.credit(uid, "w1", 50)
    time.sleep(0.2)
    assert len(sim.events(uid, ["a"])) == 1  # only the start broadcast is known
    ctrl.append({"q": {"a": [[{"constraint": 0}]] * 3}}, ["p", "q"])
    wait_for(lambda: len(sim.events(uid, ["a"])) == 6, what="appended events")
    ev = sim.events(uid, ["a"])
    assert ev[3] == ev[4] == ev[5] and len(ev[3]["a"] or ()) == 1  # q's constraint 0
    with pytest.raises(RequestError, match="unknown parts"):
        ctrl.append({}, ["nope"])
    with pytest.raises(RequestError, match="streams"):
        ctrl.append({"bad": {"zz": [None]}}, ["bad"])
    # Three distinct constraints in one event cannot bind with two workers: refused, and the
    # refused definition is taken back, so the name can be defined again.
    wide = [[{"constraint": 0}, {"constraint": 1}, {"constraint": 2}]]
    with pytest.raises(RequestError, match="only 2 workers in the scan, but the appended "
                                           "parts need 3") as refused:
        ctrl.append({"wide": {"a": wide}}, ["wide"])
    assert refused.value.status == 400
    ctrl.append({"wide": {"a": [[{"constraint": 0}, {"constraint": 1}]]}}, ["wide"])
    wait_for(lambda: len(sim.events(uid, ["a"])) == 7, what="the redefined part's event")
    assert ctrl.progress().total_events is None and not ctrl.progress().finished
    ctrl.close_sequence()
    assert ctrl.progress().total_events == 8
    wait_for(lambda: len(sim.events(uid, ["a"])) == 8, what="end broadcast")
    with pytest.raises(RequestError, match="closed") as err:
        ctrl.append({}, ["p"])
    assert err.value.status == 409
    finish_all(sim, ctrl, uid, ["a"])
    wait_for(lambda: ctrl.progress().finished, what="finish")


# === worker loss and unknown workers ===


def test_lost_worker_constraints_are_rebound(ctrl: Controller, sim: Sim) -> None:
    cells = [[{"constraint": i // 5}] for i in range(20)]
    uid = ctrl.set_sequence(MappingSequence({"m": {"a": cells}}, ["m"]))
    sim.credit(uid, "w0", 3)
    sim.credit(uid, "w1", 3)
    wait_for(lambda: len(sim.events(uid, ["a"])) >= 3, what="first events")
    before = sim.received(uid, ["a"])
    sim.kill("w1")
    wait_for(lambda: "w1" in ctrl.status().lost_workers, timeout=6, what="loss detection")
    lost = ctrl.status().lost_workers["w1"]
    assert lost.events_lost == len(before.get("w1", [])) and lost.deliveries == lost.events_lost
    assert lost.lost_events == before.get("w1", [])
    # w0 alone finishes everything not yet emitted
    done = 0
    while len(sim.events(uid, ["a"])) < 22:
        n = len(sim.received(uid, ["a"]).get("w0", []))
        if n > done:
            sim.credit(uid, "w0", n - done, processed=n, results=n)
            done = n
        time.sleep(0.02)
    after = sim.received(uid, ["a"])
    assert set(after["w1"]) == set(before.get("w1", []))  # nothing more to the dead worker
    n = len(after["w0"])
    sim.credit(uid, "w0", 0, processed=n, results=n)
    sim.reduce(uid, {"w0": n})
    wait_for(lambda: ctrl.progress().finished, what="finish without the lost worker")
    p = ctrl.progress()
    assert p.completed_events == 22 - len(before.get("w1", []))
    assert ctrl.status().counters["workers_lost"] == 1


def test_credits_of_a_worker_without_config_are_held(ctrl: Controller, sim: Sim) -> None:
    uid = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 4))
    sim.credit(uid, "ghost", 10)
    sim.r.xadd(Keys.credits(uid), {"d": b"\xc1garbage"})
    wait_for(lambda: ctrl.status().counters["malformed_credits"] == 1, what="malformed count")
    assert ctrl.status().counters["unknown_worker_credits"] == 1
    sim.add_worker("ghost")
    sim.publish()
    wait_for(lambda: "ghost" in ctrl.status().workers, what="ghost adopted")
    sim.credit(uid, "w0", 10)
    sim.credit(uid, "w1", 10)
    ev = wait_for(lambda: (e := sim.events(uid, ["a"])) and len(e) == 6 and e, what="events")
    assert ev[0]["a"] == {"w0", "w1", "ghost"}
    assert ctrl.status().workers["ghost"].granted == 10


# === redis restart ===


def test_redis_restart_ends_the_scan_and_the_next_post_works(
        redis_server: RedisServer, ctrl: Controller, sim: Sim) -> None:
    ctrl.set_param("p", b"v1")
    uid = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 50))
    sim.credit(uid, "w0", 5)
    wait_for(lambda: ctrl.status().workers["w0"].granted == 5, what="credit")
    redis_server.restart()
    wait_for(lambda: ctrl.status().reason == "redis restarted", timeout=8, what="restart noticed")
    r = redis.Redis.from_url(redis_server.url)
    wait_for(lambda: r.get(Keys.LOCK) == str(ctrl.uuid).encode(), what="lock taken again")
    pid = ctrl.parameters["p"].uuid
    assert r.get(Keys.parameter("p", str(pid))) == b"v1"
    last = sim.updates()[-1]
    assert last.finished and last.reason == "redis restarted" and last.mapping_uuid == uid
    assert ctrl.progress().finished
    # the fresh Redis is empty: wait until the (simulated) components have republished
    def republished() -> bool:
        ensemble = ctrl.configs(max_age=0)
        return len(ensemble.workers) == 2 and bool(ensemble.ingesters) and bool(ensemble.reducer)

    wait_for(republished, what="configs republished")
    new = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 2))
    sim.credit(new, "w0", 5)
    sim.credit(new, "w1", 5)
    wait_for(lambda: len(sim.events(new, ["a"])) == 4, what="events after restart")
    assert any("redis restarted" in line.get(b"msg", b"").decode()
               for _i, line in r.xrange(Keys.LOGS))


# === parameters and dumps ===


def test_parameters_hash_and_defaults(ctrl: Controller, sim: Sim) -> None:
    h = ctrl.set_param("alpha", b"\x00\x01")
    up = sim.updates()[-1]
    digest = hashlib.sha256()
    for name in sorted(up.parameters_version):
        digest.update(up.parameters_version[name].bytes)
    assert h == digest.hexdigest() == up.target_parameters_hash
    uid = up.parameters_version["alpha"]
    assert sim.r.get(Keys.parameter("alpha", str(uid))) == b"\x00\x01"
    assert ctrl.get_param("alpha") == b"\x00\x01" and ctrl.get_param("beta") is None
    sim.r.set(Keys.description("beta"),
              IntParameter(name="beta", default=5, description="b").model_dump_json())
    sim.r.set(Keys.description("bad"), b"{not json")
    wait_for(lambda: ctrl.get_param("beta") == b"5", what="default value")
    names = [d.name for d in ctrl.describe_parameters()]
    assert names == sorted(names) and "dump_prefix" in names and "beta" in names
    assert "bad" not in names and ctrl.counters["invalid_descriptions"] >= 1
    h2 = ctrl.set_param("alpha", b"x")
    assert h2 != h
    assert sim.r.ttl(Keys.parameter("alpha", str(uid))) > 0  # the old version expires


def test_dumps_json_then_cbor_with_nul(ctrl: Controller, sim: Sim, tmp_path: Path) -> None:
    prefix = f"{tmp_path}/dump-"
    ctrl.set_param("dump_prefix", prefix.encode())
    ctrl.set_param("text", b"hello")
    uid = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 3))
    mapping = json.loads(Path(f"{prefix}mapping-{uid}.json").read_text())
    assert mapping == ctrl.sequence_json()
    assert mapping["sequence"] == ["reserved_start_end", "main", "reserved_start_end"]
    params = load_parameter_file(f"{prefix}parameters-{uid}.json")
    assert {n: p.data for n, p in params.items()} == {"dump_prefix": prefix.encode(),
                                                      "text": b"hello"}
    ctrl.set_param("blob", b"a\x00b")
    uid2 = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 3))
    assert not Path(f"{prefix}parameters-{uid2}.json").exists()
    raw = cbor2.loads(Path(f"{prefix}parameters-{uid2}.cbor").read_bytes())
    assert {r["name"]: r["data"] for r in raw}["blob"] == b"a\x00b"
    ctrl.set_param("dump_prefix", f"{tmp_path}/missing-dir/x-".encode())
    ctrl.set_sequence(MappingSequence.from_uniform(["a"], 3))
    assert ctrl.counters["dump_errors"] == 1


# === scale ===


def test_progress_and_status_stay_bounded_for_a_million_events(ctrl: Controller,
                                                               sim: Sim) -> None:
    n = 10**6
    uid = ctrl.set_sequence(MappingSequence.from_uniform(["a"], n))
    sim.credit(uid, "w0", n)
    sim.credit(uid, "w1", n)
    wait_for(lambda: ctrl.progress().last_assigned == n + 2, timeout=30, what="all emitted")
    entries = sim.r.xlen(Keys.assigned(uid))
    assert entries < 100  # per batch, not per event
    assert len(ctrl.status().model_dump_json()) < 64_000
    assert len(ctrl.progress().model_dump_json()) < 200
    assert ctrl.progress().completed_events == 0
    got = sim.delivery_counts(uid)
    assert sum(got.values()) == n + 4  # both get events 0 and n+1
    for w, k in got.items():
        sim.credit(uid, w, 0, processed=k, results=k)
    sim.reduce(uid, got)
    wait_for(lambda: ctrl.progress().finished, timeout=10, what="finish")
    assert ctrl.progress().completed_events == n + 2
    loads = ctrl.load([1, 10])
    assert loads["w0"].intervals["scan"].events == got["w0"]
    assert loads["w0"].last_event == n + 1


def test_uuid_is_new_per_scan(ctrl: Controller, sim: Sim) -> None:
    a = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 1))
    b = ctrl.set_sequence(MappingSequence.from_uniform(["a"], 1))
    assert a != b and uuid.UUID(str(a)).version == 4


def test_a_stream_counts_only_when_its_ingester_heard_every_worker() -> None:
    """A worker that dialled a wrong INGESTER_URL lists the ingester, which never hears it:
    the stream must not look available (a map on it would hang at its first event)."""
    import uuid as uuidlib

    from dranspose_fast.controller.ensemble import EnsembleState, IngesterConfig, WorkerConfig
    from dranspose_fast.protocol import ConnectedWorker

    ing = IngesterConfig(name="eiger-ingester", url="tcp://127.0.0.1:9000", streams=["eiger"])
    w0 = WorkerConfig(name="w0", ingesters=[ing])
    w1 = WorkerConfig(name="w1", ingesters=[ing])
    heard = {uuidlib.uuid4(): ConnectedWorker(name="w0", service_uuid=w0.service_uuid)}
    ing.connected_workers = heard
    assert EnsembleState(ingesters=[ing], workers=[w0, w1]).get_streams() == []
    heard[uuidlib.uuid4()] = ConnectedWorker(name="w1", service_uuid=w1.service_uuid)
    assert EnsembleState(ingesters=[ing], workers=[w0, w1]).get_streams() == ["eiger"]
