"""PandA PCAP over ZeroMQ: the parser, the row split and ``ZmqSubPCAPIngester``.

Proof by the real capture (``tests/data/captures/pcap-zmq.cbors``: start, 100 blocks of about
15 rows, end): our parse against dranspose 0.2's parse (its venv, ``DRANSPOSE02_PYTHON``) on
every upstream message and every split row; our split against 0.2's own ingester driven over a
real PUB socket; the capture through our ingester with a simulated controller and workers.
Without the 0.2 venv those comparisons skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast.data.pcap import PCAPData, PCAPDecodeError, PCAPEnd, PCAPPacket, PCAPStart
from dranspose_fast.dump import read_dump
from dranspose_fast.event import StreamData
from dranspose_fast.ingester.framing import DATA, END, START, FrameError
from dranspose_fast.ingesters.zmqsub_pcap import (
    PCAPFramer,
    ZmqSubPCAPIngester,
    ZmqSubPCAPSettings,
    split_rows,
)
from dranspose_fast.middlewares.pcap import parse
from dranspose_fast.protocol import StreamName
from tests.captures import CaptureSender, read_capture
from tests.compat.dr02 import dr02_python, run_dr02, run_dr02_raw
from tests.conftest import wait_for
from tests.ingester_harness import Harness, as_bytes, harness  # noqa: F401

CAPTURE = "pcap-zmq.cbors"

# Run by dranspose 0.2's python: its parse of each frame on stdin (a CBOR list of bytes).
DR02_PARSE = """
import json, sys, cbor2
from dranspose.event import StreamData
from dranspose.middlewares.pcap import parse
out = []
for frame in cbor2.loads(sys.stdin.buffer.read()):
    p = parse(StreamData(typ="PCAP", frames=[frame]))
    out.append([type(p).__name__, p.model_dump(mode="json"), [k for k, _ in p]])
print(json.dumps(out))
"""

# Run by dranspose 0.2's python: its ingester's run_source on a PUB url, the first n messages.
DR02_INGEST = """
import asyncio, logging, sys, cbor2, zmq, zmq.asyncio
from dranspose.ingesters.zmqsub_pcap import ZmqSubPCAPIngester, ZmqSubPCAPSettings
url, n = sys.argv[1], int(sys.argv[2])
ing = ZmqSubPCAPIngester.__new__(ZmqSubPCAPIngester)  # no Redis: only run_source is used
ing._streaming_PCAP_settings = ZmqSubPCAPSettings.model_construct(upstream_url=url)
ing.ctx, ing._logger, ing.in_socket = zmq.asyncio.Context(), logging.getLogger("dr02"), None
async def main():
    gen, out = ing.run_source("pcap"), []
    while len(out) < n:
        sd = await gen.__anext__()
        out.append([f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in sd.frames])
    await gen.aclose()
    await ing.stop_source("pcap")
    sys.stdout.buffer.write(cbor2.dumps(out))
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def dr02() -> str:
    """The python of a dranspose 0.2.0 venv; skip without one (fail under ``CI=true``)."""
    return dr02_python()


def summary(packet: Any) -> list[Any]:
    return [type(packet).__name__, packet.model_dump(mode="json"), [k for k, _ in packet]]


def our_rows(messages: list[list[bytes]]) -> list[tuple[int, list[Any]]]:
    framer = PCAPFramer()
    return [(kind, out) for msg in messages for kind, out in framer.feed(msg)]


def pcap(frame: bytes) -> StreamData:
    return StreamData(typ="PCAP", frames=[frame])


def block(**extra: Any) -> dict[str, Any]:
    return {"message_id": 5, "message_type": "data", "version": 1, "frame_number": 10, **extra}


def enc(msg: Any) -> bytes:
    return json.dumps(msg).encode()


# === against dranspose 0.2 ===


def test_parse_matches_dr02_on_every_message_and_row(dr02: str) -> None:
    messages = read_capture(CAPTURE)
    assert len(messages) == 102
    upstream = [m[0] for m in messages]
    rows = [as_bytes(out[0]) for _kind, out in our_rows(messages)]
    assert len(rows) == 1502
    frames = upstream + rows
    theirs = run_dr02(DR02_PARSE, stdin=cbor2.dumps(frames))
    ours = [summary(parse(pcap(f))) for f in frames]
    assert ours == theirs
    kinds = [s[0] for s in ours[102:]]
    assert kinds == ["PCAPStart"] + ["PCAPData"] * 1500 + ["PCAPEnd"]
    assert [s[1]["frame_number"] for s in ours[103:-1]] == list(range(1500))


def test_split_matches_dr02_ingester_over_a_real_pub(dr02: str) -> None:
    messages = read_capture(CAPTURE)
    sender = CaptureSender("PUB")
    try:
        thread = sender.send_in_thread(messages)
        out = run_dr02_raw(DR02_INGEST, sender.url, "1502", timeout=60)
        thread.join(10)
    finally:
        sender.close()
    theirs = [[bytes(f) for f in m] for m in cbor2.loads(out)]
    ours = [[as_bytes(f) for f in out] for _kind, out in our_rows(messages)]
    assert len(theirs) == len(ours) == 1502
    # Same messages; rows parse alike (byte equality too, for this capture's numbers).
    assert [summary(parse(pcap(o[0]))) for o in ours] == \
        [summary(parse(pcap(t[0]))) for t in theirs]
    assert ours == theirs


# === the ingester, end to end ===


def test_capture_through_the_ingester(harness: Harness, tmp_path: Path) -> None:
    messages = read_capture(CAPTURE)
    dump = tmp_path / "pcap.cbors"
    sender = CaptureSender("PUB")
    try:
        ing = harness.ingester(ZmqSubPCAPIngester, ["pcap"], upstream_url=sender.url,
                               dump_path=str(dump))
        w0, w1 = harness.worker("w0", ing), harness.worker("w1", ing)
        uid = harness.start_scan(["pcap"], ing)
        # start and end to both workers, rows alternately
        cells: list[list[int | None]] = [[3]]
        cells += [[1 + i % 2] for i in range(1500)]
        cells.append([3])
        harness.assign(uid, 0, cells, ["w0", "w1"])
        sender.send_in_thread(messages)
        got0, got1 = w0.receive(752), w1.receive(752)
    finally:
        sender.close()
    events = sorted({e: sd for e, s in got0 + got1 for sd in s.values()}.items())
    assert [e for e, _ in events] == list(range(1502))
    packets = [parse(sd) for _e, sd in events]
    assert all(sd.typ == "PCAP" for _e, sd in events)
    assert isinstance(packets[0], PCAPStart) and isinstance(packets[-1], PCAPEnd)
    rows = packets[1:-1]
    assert all(isinstance(p, PCAPData) for p in rows)
    assert [p.frame_number for p in rows] == list(range(1500))  # type: ignore[union-attr]
    first = json.loads(messages[1][0])
    assert rows[3].energy == first["energy"][3]  # type: ignore[union-attr]
    assert rows[3].message_id == first["message_id"]
    assert [e for e, _ in got0][:3] == [0, 1, 3] and [e for e, _ in got1][:3] == [0, 2, 4]
    c = wait_for(lambda: (c := ing.counter_values()).forwarded == 1502 and c, what="counters")
    assert c.malformed == 0
    harness.update(["pcap"], uid=uid, finished=True)
    wait_for(lambda: ing._scan is not None and ing._scan.dumper is None, what="dump closed")
    records = list(read_dump(dump))
    assert len(records) == 1502
    assert [as_bytes(r.streams[StreamName("pcap")].frames[0]) for r in records] == \
        [as_bytes(sd.frames[0]) for _e, sd in events]


def test_malformed_messages_are_counted_and_the_ingester_goes_on(harness: Harness) -> None:
    good = read_capture(CAPTURE)
    start, first, end = good[0], good[1], good[-1]
    bad = [
        [b"{not json"],
        [enc(block(a=[1, 2], b=[1.0]))],  # lists of unequal length
        [enc(block(a=1.0))],  # no list at all
        [first[0], b"extra frame"],  # multipart data
        [enc({"message_id": 1, "message_type": "heartbeat", "version": 1})],
        [enc(block(version=2, a=[1]))],
        [enc([1, 2, 3])],
    ]
    sender = CaptureSender("PUB")
    try:
        ing = harness.ingester(ZmqSubPCAPIngester, ["pcap"], upstream_url=sender.url)
        w0 = harness.worker("w0", ing)
        uid = harness.start_scan(["pcap"], ing)
        n = 1 + 15 + 2 + 1
        harness.assign(uid, 0, [[1]] * n, ["w0"])
        sender.send([first, start, *bad, first, enc_msgs(block(frame_number=15, x=[7, 8])), end])
        got = w0.receive(n)
    finally:
        sender.close()
    packets = [parse(s[StreamName("pcap")]) for _e, s in got]
    assert isinstance(packets[0], PCAPStart) and isinstance(packets[-1], PCAPEnd)
    numbers = [p.frame_number for p in packets[1:-1]]  # type: ignore[union-attr]
    assert numbers == list(range(15)) + [15, 16]
    assert [getattr(p, "x", None) for p in packets[-3:-1]] == [7, 8]
    # + the 15 rows of the block before the start (the series rules count framed messages)
    c = wait_for(lambda: (c := ing.counter_values()).malformed == len(bad) + 15 and c,
                 what="malformed counted")
    assert c.forwarded == n


class WrappingIngester(ZmqSubPCAPIngester):
    """A 0.2-style user subclass: its own run_source around the built-in one."""

    async def run_source(self, stream: StreamName) -> AsyncGenerator[Any, None]:
        async for data in super().run_source(stream):
            yield data


def test_user_subclass_gets_the_same_rows_on_the_generator_path(harness: Harness) -> None:
    messages = read_capture(CAPTURE)
    sender = CaptureSender("PUB")
    try:
        ing = harness.ingester(WrappingIngester, ["pcap"], upstream_url=sender.url)
        assert ing.direct_source(StreamName("pcap")) is None
        w0 = harness.worker("w0", ing)
        uid = harness.start_scan(["pcap"], ing)
        harness.assign(uid, 0, [[1]] * 1502, ["w0"])
        sender.send_in_thread(messages)
        got = w0.receive(1502)
    finally:
        sender.close()
    frames = [as_bytes(s[StreamName("pcap")].frames[0]) for _e, s in got]
    assert frames == [as_bytes(out[0]) for _k, out in our_rows(messages)]


def enc_msgs(msg: Any) -> list[bytes]:
    return [enc(msg)]


def test_settings_and_registry_names() -> None:
    from dranspose_fast.ingesters import ingester_class, settings_class

    assert ingester_class("ZmqSubPCAPIngester") is ZmqSubPCAPIngester
    assert settings_class(ZmqSubPCAPIngester) is ZmqSubPCAPSettings
    with pytest.raises(ValueError, match="upstream"):
        ZmqSubPCAPSettings(ingester_streams=["pcap"], build_meta_file=None)


# === parser and framer rules ===


def test_parse_errors_name_the_problem() -> None:
    cases = [
        (StreamData(typ="STINS", frames=[b"{}"]), "typ 'STINS'"),
        (StreamData(typ="PCAP", frames=[b"{}", b"{}"]), "2 frames"),
        (pcap(b"[1]"), "JSON list"),
        (pcap(b"{\"message_id\": 1"), "not valid JSON"),
        (pcap(b"{}"), "no 'message_type'"),
        (pcap(enc({"message_type": "image"})), "'message_type' is 'image'"),
        (pcap(enc(block(frame_number="x"))), "'frame_number'"),
        (pcap(enc({"message_id": 1, "version": 1, "message_type": "series-start"})),
         "'arm_time'"),
    ]
    for data, text in cases:
        with pytest.raises(PCAPDecodeError, match=text):
            parse(data)


def test_parse_accepts_what_dr02_accepted() -> None:
    lax = parse(pcap(enc(block(message_id="7", frame_number=3.0, a=1))))
    assert isinstance(lax, PCAPData) and (lax.message_id, lax.frame_number) == (7, 3)
    nan = parse(pcap(b'{"message_id":1,"version":1,"message_type":"data","frame_number":0,'
                     b'"a":NaN}'))
    assert nan.a != nan.a  # type: ignore[union-attr]
    frame = parse(StreamData(typ="PCAP", frames=[zmq.Frame(enc(block(a=[1, 2])))]))
    assert frame.a == [1, 2]  # type: ignore[union-attr]


def test_models_round_trip_through_to_stream_data() -> None:
    for packet in [
        PCAPStart(message_id=1, version=1, message_type="series-start",
                  arm_time="2024-10-07T08:49:10.627Z", extra="x"),
        PCAPData(message_id=2, version=1, message_type="data", frame_number=4, energy=1.5),
        PCAPEnd(message_id=3, version=1, message_type="series-end"),
    ]:
        assert parse(packet.to_stream_data()) == packet
        assert PCAPPacket.validate_json(as_bytes(packet.to_stream_data().frames[0])) == packet


def test_framer_rules() -> None:
    framer = PCAPFramer()
    start = [enc({"message_id": 1, "version": 1, "message_type": "series-start",
                  "arm_time": "2024-10-07T08:49:10.627Z"}), b"second frame kept"]
    assert framer.feed(start) == ((START, start),)
    end = [enc({"message_id": 9, "version": 1, "message_type": "series-end"})]
    assert framer.feed(end) == ((END, end),)
    rows = framer.feed([enc(block(s="keep", a=[1, 2, 3], b=[[1], [2], [3]]))])
    assert [k for k, _ in rows] == [DATA] * 3
    assert [json.loads(f[0]) for _k, f in rows][2] == {
        "message_id": 5, "version": 1, "message_type": "data", "frame_number": 12,
        "s": "keep", "a": 3, "b": [3]}
    assert framer.feed([enc(block(a=[]))]) == []  # an empty block: no rows
    # coerced as 0.2's pydantic did, then split
    lax = framer.feed([enc(block(message_id="6", frame_number="2", a=[1]))])
    assert json.loads(lax[0][1][0])["message_id"] == 6
    assert json.loads(lax[0][1][0])["frame_number"] == 2
    for frames, field in [
        ([enc(block(a=[1], b=[1, 2]))], "data"),
        ([enc(block(a=1))], "data"),
        ([enc(block(a=[1])), b""], "frames"),
        ([], "frames"),
        ([b"\xff"], "frame 0"),
        ([enc({"message_id": 1, "version": 1, "message_type": "series-start"})], "frame 0"),
    ]:
        with pytest.raises(FrameError) as info:
            framer.feed(frames)
        assert info.value.field == field


# === fuzzing ===

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     st.text(max_size=5))
_json = st.recursive(_scalars, lambda c: st.lists(c, max_size=3)
                     | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=8)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    msg: dict[str, Any] = {}
    for key, values in [
        ("message_id", st.one_of(st.integers(-5, 2**70), st.text(max_size=3), st.floats())),
        ("version", st.sampled_from([1, 1.0, "1", 2, True, None])),
        ("message_type", st.sampled_from(["data", "series-start", "series-end", "x", 3])),
        ("frame_number", st.one_of(st.integers(-5, 10**6), st.text(max_size=3))),
        ("arm_time", st.sampled_from(["2024-10-07T08:49:10.627Z", "yesterday", 0])),
    ]:
        if draw(st.booleans()):
            msg[key] = draw(values)
    n = draw(st.integers(0, 4))
    for i in range(draw(st.integers(0, 4))):
        length = n if draw(st.integers(0, 5)) else draw(st.integers(0, 5))
        msg[f"f{i}"] = draw(st.lists(_json, min_size=length, max_size=length)) \
            if draw(st.booleans()) else draw(_json)
    return msg


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_parse_bytes(frame: bytes) -> None:
    try:
        parse(pcap(frame))
    except PCAPDecodeError:
        pass
    try:
        PCAPFramer().feed([frame])
    except FrameError:
        pass


@settings(deadline=None, max_examples=200)
@given(messages())
def test_fuzz_parse_and_split(msg: dict[str, Any]) -> None:
    frame = enc(msg)
    try:
        packet = parse(pcap(frame))
    except PCAPDecodeError:
        packet = None
    try:
        framed = PCAPFramer().feed([frame])
    except FrameError:
        return
    assert packet is not None  # what splits also parses
    if isinstance(packet, PCAPData):
        lists = {k: v for k, v in (packet.model_extra or {}).items() if type(v) is list}
        assert len(framed) == len(next(iter(lists.values())))
        for i, (kind, out) in enumerate(framed):
            assert kind == DATA
            row = parse(pcap(out[0]))
            assert isinstance(row, PCAPData)
            assert row.frame_number == packet.frame_number + i
            assert row.message_id == packet.message_id
            for k, v in (packet.model_extra or {}).items():
                assert getattr(row, k) == (v[i] if k in lists else v)
    else:
        assert [k for k, _ in framed] == [START if isinstance(packet, PCAPStart) else END]


@settings(deadline=None, max_examples=100)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20),
       st.integers(0, 2**40))
def test_fuzz_split_rows_round_trip(values: list[float], first: int) -> None:
    msg = block(frame_number=first, v=values, w=list(range(len(values))), k="s")
    rows = split_rows(msg)
    assert [json.loads(r) for r in rows] == [
        {**block(frame_number=first + i), "v": v, "w": i, "k": "s"}
        for i, v in enumerate(values)]
