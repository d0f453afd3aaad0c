"""The ingester with real Redis, real ZeroMQ sockets and a real STINS upstream.

The tests play the controller (an update in ``dfast:updates``, assignment batches in
``dfast:assigned:{uuid}``) and the workers (DEALER sockets that say hello), so every check is
on what actually crosses the sockets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from dranspose_fast.ingester import Ingester
from dranspose_fast.ingesters import (
    ZmqPullSingleIngester,
)
from dranspose_fast.protocol import IngesterState, StreamName
from dranspose_fast.runtime.redis_messages import Keys
from tests.conftest import free_port
from tests.ingester_harness import (  # noqa: F401 (fixtures)
    Harness,
    as_bytes,
    harness,
    image_numbers,
    stins_header,
    wait_for,
)

# === routing ===


def test_frames_reach_exactly_the_masked_workers(harness: Harness) -> None:
    src = harness.stins(shape=(256, 256), dtype="uint16")  # 128 KiB: zero-copy frames
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0, w1 = harness.worker("w0", ing), harness.worker("w1", ing)
    uid = harness.start_scan(["eiger"], ing)
    both = 0b11
    # evn: 0 header->both, 1 img0->w0, 2 no frame, 3 img1->w1, 4 img2 discarded,
    #      5 img3->w0, 6 img4->w1, 7 img5->both, 8 end->both
    workers = ["w0", "w1"]
    harness.assign(uid, 0, [[both], [1], [None], [2], [0]], workers)
    harness.assign(uid, 5, [[1], [2], [both], [both]], workers)
    src.send_series(6)

    got0 = w0.receive(5)
    got1 = w1.receive(5)
    assert [e for e, _ in got0] == [0, 1, 5, 7, 8]
    assert [e for e, _ in got1] == [0, 3, 6, 7, 8]
    assert image_numbers(got0, "eiger") == ["header", 0, 3, 5, "series_end"]
    assert image_numbers(got1, "eiger") == ["header", 1, 4, 5, "series_end"]
    for evn, streams in got0 + got1:
        frames = streams["eiger"].frames
        head = stins_header(streams["eiger"])
        if head["htype"] == "image":
            assert len(frames) == 2
            assert as_bytes(frames[1]) == src.image(head["frame"]).tobytes(), evn
    assert w0.nothing_more() and w1.nothing_more()
    counters = wait_for(lambda: (c := ing.counter_values()).events_routed == 8 and c)
    assert counters.forwarded == 7
    assert counters.discarded_by_map == 1
    assert counters.discarded_outside_scan == 0 and counters.malformed == 0
    published = wait_for(lambda: (harness.config(ing) or {}).get("counters", {})
                         .get("events_routed") == 8 and harness.config(ing))
    assert published["counters"]["forwarded"] == 7
    assert published["processed_events"] == 8
    IngesterState.model_validate(published)  # the 0.2 state still parses


def test_three_phase_filter_and_malformed_messages(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    # Before the header: two stray images (outside the scan) and three malformed messages.
    src.send_image(100)
    src.send_raw([b"not json at all", b"payload"])
    src.send_image(101)
    src.send_raw([json.dumps({"msg_number": 1, "frame": 3}).encode()])  # no htype
    src.send_raw([json.dumps({"htype": "dimage-1.0"}).encode()])  # unknown htype
    wait_for(lambda: ing.counter_values().malformed == 3, what="malformed counted")
    harness.assign(uid, 0, [[1]] * 5, ["w0"])
    src.send_header()
    src.send_image(0)
    src.send_raw([json.dumps({"htype": 7}).encode()])  # malformed inside the series: dropped
    src.send_image(1)
    src.send_image(2)
    src.send_end()
    for i in (200, 201, 202):  # after the end: discarded until the next mapping
        src.send_image(i)
    got = w0.receive(5)
    assert image_numbers(got, "eiger") == ["header", 0, 1, 2, "series_end"]
    c = wait_for(lambda: (c := ing.counter_values()).discarded_outside_scan == 5 and c,
                 what="5 discarded outside the scan")
    assert c.malformed == 4
    assert c.forwarded == 5
    # The scan is finished; what arrives now is drained and counted too.
    harness.update(["eiger"], uid=uid, finished=True)
    src.send_image(300)
    wait_for(lambda: ing.counter_values().discarded_outside_scan == 6)
    assert w0.nothing_more()


def test_rows_wait_for_data_and_nothing_is_held_back(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    harness.assign(uid, 0, [[1]] * 12, ["w0"])
    src.send_header()
    src.send_image(0)
    # Ten more events are assigned, but what is there is delivered at once.
    assert [e for e, _ in w0.receive(2)] == [0, 1]
    for i in range(1, 10):
        src.send_image(i)
    src.send_end()
    assert [e for e, _ in w0.receive(12)] == list(range(12))


def test_new_mapping_restarts_the_series(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid1 = harness.start_scan(["eiger"], ing)
    harness.assign(uid1, 0, [[1]] * 4, ["w0"])
    src.send_series(2)
    assert image_numbers(w0.receive(4), "eiger") == ["header", 0, 1, "series_end"]
    uid2 = harness.start_scan(["eiger"], ing)
    harness.assign(uid2, 0, [[1]] * 3, ["w0"])
    src.send_image(99)  # before the new header: discarded
    src.send_series(1)
    got = w0.receive(7)[4:]
    assert image_numbers(got, "eiger") == ["header", 0, "series_end"]
    assert [e for e, _ in got] == [0, 1, 2]


def test_multi_stream_ingester(harness: Harness) -> None:
    a, b, c = harness.stins(), harness.stins(shape=(2,)), harness.stins()
    ing = harness.ingester(
        ZmqPullSingleIngester, ["a", "b", "c"],
        upstream_urls={"a": a.url, "b": b.url, "c": c.url})
    w0, w1 = harness.worker("w0", ing), harness.worker("w1", ing)
    # The mapping has a stream of another ingester ("x") between ours; "c" is not mapped.
    uid = harness.start_scan(["a", "x", "b"], ing)
    assert ing.active_streams == ["a", "b"]
    assert sorted(ing.upstream_streams) == ["a", "b"]
    both = 0b11
    cells: list[list[int | None]] = [
        [both, 1, both],   # 0: headers of a and b to both
        [1, 2, 2],         # 1: a0->w0, b0->w1
        [None, 1, 1],      # 2: b1->w0 only
        [1, None, 1],      # 3: a1 and b2 both to w0, one event
        [0, None, None],   # 4: a2 discarded
        [both, 1, both],   # 5: ends
    ]
    harness.assign(uid, 0, cells, ["w0", "w1"])
    a.send_series(3)
    b.send_series(3)
    got0 = w0.receive(5)
    got1 = w1.receive(3)
    assert [(e, sorted(s)) for e, s in got0] == [
        (0, ["a", "b"]), (1, ["a"]), (2, ["b"]), (3, ["a", "b"]), (5, ["a", "b"])]
    assert [(e, sorted(s)) for e, s in got1] == [(0, ["a", "b"]), (1, ["b"]), (5, ["a", "b"])]
    assert stins_header(got0[3][1]["a"])["frame"] == 1
    assert stins_header(got0[3][1]["b"])["frame"] == 2
    assert as_bytes(got0[2][1]["b"].frames[1]) == b.image(1).tobytes()
    counters = wait_for(lambda: (c := ing.counter_values()).events_routed == 6 and c)
    assert counters.discarded_by_map == 1
    assert counters.forwarded == 9


def test_unmapped_stream_upstream_is_closed_by_a_new_mapping(harness: Harness) -> None:
    a, b = harness.stins(), harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["a", "b"],
                           upstream_urls={"a": a.url, "b": b.url})
    harness.start_scan(["a", "b"], ing)
    assert sorted(ing.upstream_streams) == ["a", "b"]
    harness.start_scan(["b"], ing)
    assert ing.upstream_streams == ["b"]
    assert ing.active_streams == ["b"]


# === workers ===


def test_worker_connecting_late_gets_its_queued_batches(harness: Harness) -> None:
    src = harness.stins(shape=(200, 200))  # 80 KiB frames
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    uid = harness.start_scan(["eiger"], ing)
    harness.assign(uid, 0, [[1]] * 7, ["late"])
    src.send_series(5)
    wait_for(lambda: ing.counter_values().queued_for_absent_workers == 7, what="7 queued")
    late = harness.worker("late", ing)
    got = late.receive(7)
    assert [e for e, _ in got] == list(range(7))
    assert image_numbers(got, "eiger") == ["header", 0, 1, 2, 3, 4, "series_end"]
    assert as_bytes(got[3][1]["eiger"].frames[1]) == src.image(2).tobytes()
    c = wait_for(lambda: (c := ing.counter_values()).queued_for_absent_workers == 0 and c)
    assert c.dropped_for_absent_workers == 0


def test_hellos_register_and_expire(harness: Harness) -> None:
    ing = harness.ingester(Ingester, ["s"])
    w = harness.worker("alpha", ing)
    cfg = wait_for(lambda: (c := harness.config(ing)) and c["connected_workers"] and c)
    (entry,) = cfg["connected_workers"].values()
    assert entry["name"] == "alpha" and entry["service_uuid"] == str(w.uuid)
    w.sock.send_multipart([b"junk"])
    wait_for(lambda: ing.counter_values().bad_worker_messages == 1)
    # No more hellos: forgotten after 4 config intervals (0.8 s here).
    wait_for(lambda: not ing.state.connected_workers, timeout=5, what="worker expiry")


# === assignments ===


def test_bad_assignment_entries_are_counted_and_skipped(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    harness.redis.xadd(Keys.assigned(uid), {"b": b"\x00\x01", "w": b"[]"})
    harness.assign(uid, 0, [[1, 1]], ["w0"])  # two streams: the mapping has one
    harness.assign(uid, 0, [[1]] * 3, ["w0"])
    src.send_series(1)
    assert image_numbers(w0.receive(3), "eiger") == ["header", 0, "series_end"]
    assert ing.counter_values().bad_assignments == 2


# === shutdown ===


def test_close_deletes_the_config_key(harness: Harness) -> None:
    ing = harness.ingester(Ingester, ["s"])
    key = Keys.config("ingester", ing.state.name)
    assert harness.redis.exists(key)
    ing.close()
    assert not harness.redis.exists(key)


def test_sigterm_stops_the_process_cleanly(harness: Harness) -> None:
    src = harness.stins()
    name = f"sig-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, REDIS_URL=harness.redis_url, INGESTER_STREAMS='["eiger"]',
               INGESTER_NAME=name, INGESTER_URL=f"tcp://127.0.0.1:{free_port()}",
               UPSTREAM_URL=src.url, DFAST_CONFIG_TTL="2", DFAST_CONFIG_INTERVAL="0.2",
               BUILD_META_FILE="")
    code = ("from dranspose_fast.ingesters import ZmqPullSingleIngester\n"
            "ZmqPullSingleIngester().run()\n")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=root)
    key = Keys.config("ingester", name)
    try:
        wait_for(lambda: harness.redis.exists(key), timeout=20, what="subprocess config")
        uid = harness.update(["eiger"])
        wait_for(lambda: str(uid).encode() in (harness.redis.get(key) or b""), what="scan")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not harness.redis.exists(key)


# === joining late, Redis restarts ===


def test_late_ingester_learns_the_scan_and_reads_assignments_from_the_start(
    harness: Harness,
) -> None:
    src = harness.stins()
    uid = harness.update(["eiger"])
    harness.assign(uid, 0, [[1]] * 2, ["w0"])
    harness.assign(uid, 2, [[1]] * 2, ["w0"])
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    wait_for(lambda: (harness.config(ing) or {}).get("mapping_uuid") == str(uid))
    w0 = harness.worker("w0", ing)
    src.send_series(2)
    assert image_numbers(w0.receive(4), "eiger") == ["header", 0, 1, "series_end"]


def test_redis_restart_ends_the_scan(redis_server: Any) -> None:
    h = Harness(redis_server.url)
    try:
        src = h.stins()
        ing = h.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
        uid = h.start_scan(["eiger"], ing)
        redis_server.restart()
        wait_for(lambda: ing._scan is not None and ing._scan.uuid == uid and ing._scan.finished,
                 what="scan ended by the restart")
        src.send_image(1)  # outside any scan now: drained and counted
        wait_for(lambda: ing.counter_values().discarded_outside_scan == 1)
        wait_for(lambda: h.config(ing) is not None, what="config republished")
    finally:
        h.close()


# === buffers sized in bytes, back-pressure ===


def test_high_water_marks_are_sized_in_bytes(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url,
                           upstream_frame_bytes=64 << 10, upstream_buffer_bytes=2 << 20)
    harness.start_scan(["eiger"], ing)
    upstream = wait_for(lambda: ing._upstreams.get(StreamName("eiger")), what="upstream")
    assert upstream.socket.getsockopt(zmq.RCVHWM) == 32  # 2 MiB of 64 KiB frames
    assert ing._router is not None and ing._router.getsockopt(zmq.SNDHWM) == 32
    default = harness.settings(ZmqPullSingleIngester, ["x"], upstream_url=src.url)
    assert default.hwm == 256  # 256 MiB of 1 MiB frames
    tiny = harness.settings(ZmqPullSingleIngester, ["x"], upstream_url=src.url,
                            upstream_frame_bytes=1 << 30, upstream_buffer_bytes=1)
    assert tiny.hwm == 16  # never below the floor


def test_back_pressure_reaches_the_source_and_nothing_is_lost(harness: Harness) -> None:
    """Without assigned rows the ingester reads nothing: the source's sends block."""
    frame = 64 << 10
    n = 2000  # 128 MiB: far more than the HWMs and the loopback TCP buffers hold
    port = free_port()
    push = harness.ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 4)
    push.bind(f"tcp://127.0.0.1:{port}")
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"],
                           upstream_url=f"tcp://127.0.0.1:{port}",
                           upstream_frame_bytes=frame, upstream_buffer_bytes=1 << 20)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    image = np.arange(frame, dtype=np.uint8)

    def message(i: int) -> list[bytes]:
        head = {"htype": "image", "frame": i, "shape": [frame], "type": "uint8"}
        return [json.dumps(head).encode(), (image + i % 251).tobytes()]

    push.send_multipart([json.dumps({"htype": "header"}).encode()])
    sent = 0
    deadline = time.monotonic() + 3.0
    while sent < n and time.monotonic() < deadline:
        try:
            push.send_multipart(message(sent), zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            time.sleep(0.01)
    assert sent < n // 2, f"the source was never held back ({sent} sent)"
    counters = ing.counter_values()
    assert counters.discarded_outside_scan == 0 and counters.malformed == 0
    harness.assign(uid, 0, [[1]] * (n + 2), ["w0"])
    while sent < n:
        push.send_multipart(message(sent))
        sent += 1
    push.send_multipart([json.dumps({"htype": "series_end"}).encode()])
    got = w0.receive(n + 2, timeout=60)
    assert [e for e, _ in got] == list(range(n + 2))
    for evn in (1, n // 2, n):
        head = stins_header(got[evn][1]["eiger"])
        assert head["frame"] == evn - 1
        assert as_bytes(got[evn][1]["eiger"].frames[1]) == message(evn - 1)[1]
    counters = ing.counter_values()
    assert counters.forwarded == n + 2 and counters.dropped_for_absent_workers == 0
    push.close(linger=0)
