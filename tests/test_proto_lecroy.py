"""LeCroy MAUI: models, parser, framer and SUB ingester, on the recorded capture.

``tests/data/captures/maui-02-continuous-3.cbor.gz`` is continuous mode with channels 2 and 4:
prepare, sequence start (``ntriggers=-1``), two triggers of two traces messages and a sequence
end each, end.  0.2's ingester forms 4 events from it: the prepare, two sequences (the first
sequence start put in front of each), the end.  The comparisons with dranspose 0.2 (its
parser, its ingester's ``run_source`` on the same socket stream) run in its venv
(``DRANSPOSE02_PYTHON``; under ``CI=true`` a missing venv fails).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dranspose_fast.data.lecroy import (
    LECROY_TYPE,
    LecroyEnd,
    LecroyPacket,
    LecroyParsed,
    LecroyPrepare,
    LecroySeqStart,
    WhatEnum,
)
from dranspose_fast.event import StreamData
from dranspose_fast.helpers.safe_pickle import loads as safe_loads
from dranspose_fast.ingester import IsSoftwareTriggered
from dranspose_fast.ingester.framing import DATA, END, START, FrameError
from dranspose_fast.ingesters import ingester_class
from dranspose_fast.ingesters.zmqsub_lecroy import (
    LecroyFramer,
    ZmqSubLecroyIngester,
    ZmqSubLecroySettings,
)
from dranspose_fast.middlewares.lecroy import LecroyDecodeError, decode_header, parse
from dranspose_fast.protocol import StreamName
from tests.captures import CaptureSender, read_capture
from tests.compat.dr02 import dr02_output, dr02_python, ingest_until_quiet, run_dr02, spawn_dr02
from tests.conftest import wait_for
from tests.ingester_harness import Harness, as_bytes, harness  # noqa: F401 (fixture)
from tests.protocol_harness import stream_capture

CAPTURE = "maui-02-continuous-3.cbor.gz"
_CAPTURE = read_capture(CAPTURE)
M = _CAPTURE
# The events of 0.2's rules: the prepare, each sequence behind the first start, the end.
EVENTS = [M[0], M[1] + M[2] + M[3] + M[4], M[1] + M[5] + M[6] + M[7], M[8]]


def sd(frames: list[Any]) -> StreamData:
    return StreamData(typ=LECROY_TYPE, frames=frames)


def msg(**fields: Any) -> bytes:
    return json.dumps({"htype": "msg", **fields}).encode()


def traces(frame: int, ch: int, n: int = 4, dtype: str = "float64",
           stamps: Any = None) -> list[bytes]:
    meta = {"htype": "traces", "ch": ch, "ts": 1.5, "frame": frame, "shape": [1, n],
            "horiz_offset": -1e-7, "horiz_interval": 1.25e-11, "dtype": dtype}
    data = np.arange(n, dtype=dtype if dtype in ("float64", "u1") else "u1") + 10 * frame
    return [json.dumps(meta).encode(), data.tobytes(), pickle.dumps(stamps or [1.5])]


def sequential() -> list[list[bytes]]:
    """Sequential mode: a sequence start before every trigger."""
    out = [[msg(what=0, frame=0)]]
    for seq in range(3):
        out.append([msg(what=1, frame=2 * seq, ntriggers=3, seqno=seq, channels=[1, 3])])
        out += [traces(2 * seq, 1), traces(2 * seq + 1, 3)]
        out.append([msg(what=2, frame=2 * seq + 2)])
    out.append([msg(what=3, frame=6, frames=6)])
    return out


@pytest.fixture(scope="module")
def dr02() -> str:
    """The python of the dranspose 0.2.0 venv; skipped without it, failed under CI=true."""
    return dr02_python()


# A packet as JSON, for comparing with 0.2's across processes; run here and in the 0.2 venv.
SUMMARY = '''
import enum, hashlib
import numpy as np

def plain(v):
    if isinstance(v, np.ndarray):
        return {"ndarray": [str(v.dtype), list(v.shape), hashlib.sha256(v.tobytes()).hexdigest()]}
    if hasattr(v, "__pydantic_extra__"):
        return summary(v)
    if isinstance(v, dict):
        return {"dict": [[k, plain(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, enum.Enum):
        return {"enum": [type(v).__name__, v.value]}
    if isinstance(v, float):
        return ["float", repr(v)]
    if isinstance(v, (int, str, bool)) or v is None:
        return [type(v).__name__, v]
    return {"other": [type(v).__name__, repr(v)]}

def summary(p):
    return {"cls": type(p).__name__, "dict": plain(p.__dict__),
            "extra": plain(p.__pydantic_extra__ or {}), "set": sorted(p.model_fields_set)}
'''
_ns: dict[str, Any] = {}
exec(SUMMARY, _ns)  # our own constant
summary = _ns["summary"]

DR02_PARSE = SUMMARY + '''
import json, sys, cbor2, zmq
from dranspose.event import StreamData
from dranspose.data.lecroy import LECROY_TYPE
from dranspose.middlewares.lecroy import parse
with open(sys.argv[1], "rb") as fh:
    cases = cbor2.load(fh)
res = []
for frames in cases:
    for as_frames in (False, True):
        data = StreamData(typ=LECROY_TYPE,
                          frames=[zmq.Frame(f) for f in frames] if as_frames else frames)
        try:
            res.append(summary(parse(data)))
        except Exception as exc:
            res.append({"error": type(exc).__name__})
print(json.dumps(res))
'''

DR02_INGEST = ingest_until_quiet("zmqsub_lecroy", "ZmqSubLecroyIngester",
                                 "ZmqSubLecroySettings")


# === parser ===


@pytest.mark.parametrize("as_frames", [False, True])
def test_parse_the_events_of_the_capture(as_frames: bool) -> None:
    events = [[zmq.Frame(f) for f in e] if as_frames else e for e in EVENTS]
    prepare, seq0, seq1, end = (parse(sd(e)) for e in events)
    assert isinstance(prepare, LecroyPrepare) and prepare.what is WhatEnum.PREPARE
    assert isinstance(end, LecroyEnd) and end.frames == 4
    for k, (seq, frames) in enumerate([(seq0, events[1]), (seq1, events[2])]):
        assert isinstance(seq, LecroyParsed)
        assert (seq.ntriggers, seq.seqno, seq.channels) == (-1, 0, [2, 4])
        assert [m.ch for m in seq.meta] == [2, 4]
        assert [m.frame for m in seq.meta] == [2 * k, 2 * k + 1]
        for ich, array in enumerate(seq.data):
            wire = frames[2 + 3 * ich]
            assert array.shape == (1, 8002) and array.dtype == np.float64
            # A view of the received frame, not a copy.
            assert not array.flags.owndata
            raw = wire.buffer if isinstance(wire, zmq.Frame) else wire
            assert np.shares_memory(array, np.frombuffer(raw, np.uint8))
            np.testing.assert_array_equal(array.ravel(), np.frombuffer(as_bytes(wire), "<f8"))
        assert seq.timestamps == [[seq.meta[0].ts], [seq.meta[1].ts]]


def test_parse_builds_what_pydantic_validation_builds() -> None:
    """The fast path gives 0.2's models exactly (as its parse builds them)."""
    for frames in M:
        assert summary(decode_header(frames[0])) == summary(
            LecroyPacket.validate_json(frames[0]))
    for event in EVENTS[1:3]:
        ours = parse(sd(event))
        start = LecroyPacket.validate_json(event[0])
        theirs = LecroyParsed(**start.model_dump())
        for ich in range(2):
            theirs.meta.append(LecroyPacket.validate_json(event[1 + 3 * ich]))
            theirs.data.append(np.frombuffer(event[2 + 3 * ich], "float64").reshape(1, 8002))
            theirs.timestamps.append(pickle.loads(event[3 + 3 * ich]))
        assert summary(ours) == summary(theirs)
        assert repr(ours) == repr(theirs)


def test_parse_matches_dranspose_02(dr02: str, tmp_path: Path) -> None:
    """Events and raw messages: the same packets where 0.2 parses, an error where it fails."""
    cases = EVENTS + M + [EVENTS[1][:-2], EVENTS[1][:2] + [b"\0" * 8] + EVENTS[1][3:]]
    path = tmp_path / "cases.cbor"
    path.write_bytes(cbor2.dumps(cases))
    theirs = run_dr02(DR02_PARSE, path)
    assert len(theirs) == 2 * len(cases)
    compared = errors = 0
    for i, frames in enumerate(c for case in cases for c in (case, [zmq.Frame(f) for f in case])):
        want = theirs[i]
        if "error" in want:
            with pytest.raises(LecroyDecodeError):
                parse(sd(frames))
            errors += 1
        else:
            assert json.loads(json.dumps(summary(parse(sd(frames))))) == want, f"case {i // 2}"
            compared += 1
    assert compared >= 2 * (len(EVENTS) + 2)  # events, plus prepare and end as raw messages
    assert errors >= 2 * 2


def test_parse_is_as_lax_as_pydantic() -> None:
    start = msg(what=1, frame="0", ntriggers=1, seqno=0, channels=[1])  # what="1": refused
    loose = json.loads(traces(0, 1)[0])
    loose.update(ts=2, horiz_offset=0, shape=["1", 4])
    t = traces(0, 1)
    p = parse(sd([start, json.dumps(loose).encode(), t[1], t[2], msg(what=2, frame=1)]))
    assert isinstance(p, LecroyParsed) and p.what is WhatEnum.START and p.frame == 0
    assert type(p.meta[0].ts) is float and p.meta[0].shape == [1, 4]
    assert p.data[0].shape == (1, 4)
    # LecroyEnd has no htype: 0.2 ignores it.
    assert isinstance(parse(sd([b'{"what": 3, "frame": 1, "frames": 1}'])), LecroyEnd)


def test_to_stream_data_round_trips() -> None:
    for event in EVENTS:
        first = parse(sd(event))
        again = parse(first.to_stream_data())
        assert summary(again) == summary(first)


def _evil_pickle() -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo pwned",))

    return pickle.dumps([Evil()])


_SEQ = EVENTS[1]


@pytest.mark.parametrize(("frames", "words"), [
    ([], "no frames"),
    ([b"{not json"], "frame 0 is not valid JSON"),
    ([b"[1]"], "frame 0 is a JSON list"),
    ([b'{"htype": "msg", "what": 7, "frame": 0}'], "frame 0 is no LeCroy message"),
    ([msg(what=2, frame=0)], "frame 0 is a LecroySeqEnd"),
    (_SEQ[:-1], "has 7 frames, expected 8"),
    (_SEQ + [b"x"], "has 9 frames, expected 8"),
    (_SEQ[:1] + [msg(what=2, frame=0)] + _SEQ[2:], "frame 1 is a LecroySeqEnd"),
    (_SEQ[:2] + [b"\0" * 64000] + _SEQ[3:], "frame 2 (waveforms of ch 2"),
    (_SEQ[:3] + [b"garbage"] + _SEQ[4:], "frame 3 (timestamps of ch 2): not a valid pickle"),
    (_SEQ[:3] + [_evil_pickle()] + _SEQ[4:], "posix.system is not plain data"),
    ([_SEQ[0], traces(0, 2, dtype="object")[0], b"", b"", traces(0, 4)[0], b"", b"", b""],
     "frame 1: field 'dtype' = 'object' is not a plain"),
    ([_SEQ[0], traces(0, 2, dtype="nonsense")[0], b"", b"", traces(0, 4)[0], b"", b"", b""],
     "field 'dtype' = 'nonsense' is no numpy dtype"),
])
def test_parse_names_what_is_wrong(frames: list[bytes], words: str) -> None:
    with pytest.raises(LecroyDecodeError) as info:
        parse(sd(frames))
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_refuses_other_typs() -> None:
    with pytest.raises(LecroyDecodeError, match="typ 'STINS'"):
        parse(StreamData(typ="STINS", frames=M[0]))


# === framer ===


def _frame_all(framer: LecroyFramer, messages: list[list[Any]]) -> list[tuple[int, list[Any]]]:
    return [m for frames in messages for m in framer.feed(frames)]


def test_framer_forms_0_2_events_in_continuous_mode() -> None:
    out = _frame_all(LecroyFramer(), M)
    assert [k for k, _ in out] == [START, DATA, DATA, END]
    assert [f for _, f in out] == EVENTS
    assert out[2][1][0] is M[1][0]  # the kept sequence start, not a copy


def test_framer_forms_events_in_sequential_mode() -> None:
    messages = sequential()
    out = _frame_all(LecroyFramer(), messages)
    assert [k for k, _ in out] == [START, DATA, DATA, DATA, END]
    seqs = [parse(sd(f)) for _, f in out[1:-1]]
    assert [s.seqno for s in seqs] == [0, 1, 2]  # type: ignore[union-attr]
    assert [s.data[1][0, 0] for s in seqs] == [10, 30, 50]  # type: ignore[union-attr]


def test_framer_drops_broken_sequences_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    framer = LecroyFramer()
    assert framer.feed(M[2]) == ((DATA, M[2]),)  # outside an acquisition: series rules drop it
    assert framer.feed(M[0]) == ()
    assert framer.feed(M[1]) == ((START, M[0]),)
    framer.feed(M[2])
    with pytest.raises(FrameError) as info:  # channel 4's traces were lost
        framer.feed(M[4])
    assert info.value.field == "traces" and "1 traces messages for 2 channels" in str(info.value)
    bad = M[5][:1] + [b"\0" * 10] + M[5][2:]
    with pytest.raises(FrameError) as info:
        framer.feed(bad)
    assert info.value.field == "traces" and "waveforms of ch 2" in str(info.value)
    with pytest.raises(FrameError) as info:
        framer.feed(M[5][:2])
    assert info.value.field == "frames"
    with pytest.raises(FrameError) as info:
        framer.feed([M[4][0], b"x"])
    assert info.value.field == "frames"
    with pytest.raises(FrameError) as info:
        framer.feed(M[0])
    assert info.value.field == "what"
    (kind, frames), = _frame_all(framer, M[5:8])
    assert kind == DATA and frames == EVENTS[2]
    framer.feed(M[2])
    with caplog.at_level(logging.ERROR, "dranspose_fast.ingesters.zmqsub_lecroy"):
        assert framer.feed(M[8]) == ((END, M[8]),)
    assert "3 frames of an unfinished sequence" in caplog.text
    seq = sequential()
    framer.reset()
    framer.feed(seq[0])
    framer.feed(seq[1])
    framer.feed(seq[2])
    with pytest.raises(FrameError, match="inside an unfinished sequence"):
        framer.feed(seq[5])
    assert [k for k, _ in _frame_all(framer, seq[6:])] == [DATA, DATA, END]


def test_framer_reset_forgets_a_pending_prepare() -> None:
    framer = LecroyFramer()
    framer.feed(M[0])
    framer.reset()
    assert framer.feed(M[1]) == ((DATA, M[1]),)


# === fuzzing ===

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)
_headers = st.fixed_dictionaries(
    {"htype": st.sampled_from(["msg", "traces"]) | _values},
    optional={"what": st.integers(-1, 4) | _values, "frame": st.integers(0, 3) | _values,
              "frames": st.integers() | _values, "ntriggers": st.sampled_from([-1, 2]) | _values,
              "seqno": st.integers() | _values,
              "channels": st.lists(st.integers(1, 4), max_size=3) | _values,
              "ch": st.integers(1, 4) | _values, "ts": st.floats() | _values,
              "shape": st.lists(st.integers(-1, 8), max_size=3) | _values,
              "dtype": st.sampled_from(["float64", "u1", "object", "V0", "x"]) | _values,
              "horiz_offset": st.floats() | _values, "horiz_interval": st.floats() | _values})
_pieces = st.sampled_from([f for m in M for f in m] + [f for m in sequential() for f in m])
_frame = (_headers.map(lambda h: json.dumps(h).encode()) | st.binary(max_size=40) | _pieces
          | st.sampled_from([pickle.dumps([1.0]), pickle.dumps(None), _evil_pickle()]))
_fuzz = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.lists(_frame, max_size=9))
def test_fuzz_parse_raises_only_decode_errors(frames: list[bytes]) -> None:
    try:
        packet = parse(sd(frames))
    except LecroyDecodeError:
        return
    assert isinstance(packet, LecroyPrepare | LecroyEnd | LecroyParsed)
    if isinstance(packet, LecroyParsed):
        assert sum(a.nbytes for a in packet.data) == sum(
            len(frames[2 + 3 * i]) for i in range(len(packet.channels)))


@_fuzz
@given(st.lists(st.sampled_from(M + sequential()) | st.lists(_frame, min_size=1, max_size=3),
                max_size=12))
def test_fuzz_framer_raises_only_frame_errors(messages: list[list[bytes]]) -> None:
    framer = LecroyFramer()
    for frames in messages:
        try:
            out = framer.feed(frames)
        except FrameError as exc:
            assert exc.field
            continue
        for kind, framed in out:
            if kind == DATA and framer._running:  # whatever a running framer forms, parses
                assert isinstance(parse(sd(framed)), LecroyParsed)
    framer.reset()
    assert [f for _, f in _frame_all(framer, M)] == EVENTS


# === the ingester, over real sockets ===



def _check_series(got: list[tuple[int, dict[str, Any]]]) -> None:
    assert [e for e, _ in got] == list(range(len(EVENTS)))
    streams = [s["scope"] for _, s in got]
    assert all(s.typ == LECROY_TYPE for s in streams)
    assert [[as_bytes(f) for f in s.frames] for s in streams] == EVENTS
    packets = [parse(s) for s in streams]
    assert [type(p) for p in packets] == [LecroyPrepare, LecroyParsed, LecroyParsed, LecroyEnd]


def test_ingester_forwards_the_capture(harness: Harness) -> None:
    got = stream_capture(harness, ZmqSubLecroyIngester, M, len(EVENTS), ["scope"], exact=True)[1]
    _check_series(got)
    ing = harness.ingesters[-1]
    c = wait_for(lambda: (c := ing.counter_values()).forwarded == len(EVENTS) and c)
    assert c.malformed == 0 and c.discarded_outside_scan == 0


def test_ingester_forms_the_events_dranspose_02_forms(dr02: str, tmp_path: Path) -> None:
    sender = CaptureSender("PUB")
    try:
        proc = spawn_dr02(DR02_INGEST, sender.url, "1.5")
        sender.send(M)
        out = dr02_output(proc).decode()
    finally:
        sender.close()
    theirs = [(typ, [bytes.fromhex(f) for f in frames]) for typ, frames in json.loads(out)]
    assert theirs == [(LECROY_TYPE, e) for e in EVENTS]


def test_ingester_counts_malformed_messages_and_goes_on(harness: Harness) -> None:
    bad_size = M[2][:1] + [b"\0" * 12] + M[2][2:]
    unsafe = M[3][:2] + [_evil_pickle()]
    messages = (
        [M[2]]  # traces before the start: 1 malformed
        + M[:2]  # the start event
        + [[b"{not json"], bad_size, M[2][:2], unsafe]  # 4 malformed
        + M[2:5]  # a whole sequence
        + M[5:6] + M[7:8]  # ch 4 lost: the sequence is dropped at its end: 1 malformed
        + M[8:9]  # the end event
        + [M[2]]  # after the end: discarded outside the scan
    )
    got = stream_capture(harness, ZmqSubLecroyIngester, messages, 3, ["scope"], exact=True)[1]
    streams = [s["scope"] for _, s in got]
    assert [[as_bytes(f) for f in s.frames] for s in streams] == [EVENTS[0], EVENTS[1], M[8]]
    ing = harness.ingesters[-1]
    c = wait_for(lambda: (c := ing.counter_values()).discarded_outside_scan == 1 and c,
                 what="the message after the end discarded")
    assert c.malformed == 6
    assert c.forwarded == 3


class WrappingIngester(ZmqSubLecroyIngester):
    """A 0.2-style user subclass: wraps the built-in generator and adds a software stream."""

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        if stream == "soft":
            while True:
                yield IsSoftwareTriggered()
        async for data in super().run_source(stream):
            await asyncio.sleep(0)
            yield data

    def software_trigger(self) -> Any:
        k = 0
        while True:
            yield {"soft": StreamData(typ="counter", frames=[str(k).encode()])}
            k += 1


def test_user_subclass_wrapping_run_source(harness: Harness) -> None:
    got = stream_capture(harness, WrappingIngester, M, len(EVENTS), ["scope"], exact=True)[1]
    _check_series(got)
    assert isinstance(harness.ingesters[-1], WrappingIngester)


def test_ingester_by_name_and_settings() -> None:
    assert ingester_class("ZmqSubLecroyIngester") is ZmqSubLecroyIngester
    cfg = ZmqSubLecroySettings(upstream_url="tcp://127.0.0.1:9999", ingester_streams=["x"],
                               build_meta_file=None)
    ing = ZmqSubLecroyIngester(cfg)
    try:
        assert ing._streaming_Lecroy_settings is cfg
        assert ZmqSubLecroyIngester.settings_class is ZmqSubLecroySettings
    finally:
        ing.close()


def test_safe_loads_reads_the_capture_timestamps() -> None:
    assert safe_loads(M[2][2]) == [json.loads(M[2][0])["ts"]]
    assert isinstance(LecroyPacket.validate_json(M[1][0]), LecroySeqStart)
