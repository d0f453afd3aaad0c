"""contrast (NanoMAX scan software): models, parser, framer and SUB ingester, on the capture.

``tests/data/captures/contrast-dump.cbors`` holds 26 pickled dicts: 4 heartbeats, ``started``,
20 ``running``, ``finished``.  The comparisons with dranspose 0.2 (its parser, and its own
ingester's ``run_source`` on the same socket stream) run in its venv (``DRANSPOSE02_PYTHON``;
under ``CI=true`` a missing venv fails).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
from collections import OrderedDict
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dranspose_fast.data.contrast import (
    ContrastFinished,
    ContrastHeartbeat,
    ContrastPacket,
    ContrastRunning,
    ContrastStarted,
)
from dranspose_fast.event import StreamData
from dranspose_fast.ingester import IsSoftwareTriggered
from dranspose_fast.ingester.framing import DATA, END, START, FrameError
from dranspose_fast.ingesters import ingester_class
from dranspose_fast.ingesters.zmqsub_contrast import (
    ContrastFramer,
    ZmqSubContrastIngester,
    ZmqSubContrastSettings,
)
from dranspose_fast.middlewares.contrast import ContrastDecodeError, parse
from dranspose_fast.protocol import StreamName
from tests.captures import CAPTURES, CaptureSender, read_capture
from tests.compat.dr02 import dr02_output, dr02_python, ingest_until_quiet, run_dr02, spawn_dr02
from tests.conftest import wait_for
from tests.ingester_harness import Harness, as_bytes, harness  # noqa: F401 (fixture)
from tests.protocol_harness import stream_capture

CAPTURE = "contrast-dump.cbors"
N_RUNNING = 20
_CAPTURE = read_capture(CAPTURE)
_PACKETS = ContrastStarted | ContrastRunning | ContrastFinished | ContrastHeartbeat


def sd(frames: list[Any]) -> StreamData:
    return StreamData(typ="contrast", frames=frames)


def status_of(frames: list[Any]) -> str:
    return str(pickle.loads(as_bytes(frames[0]))["status"])  # our own capture: trusted


@pytest.fixture(scope="module")
def capture() -> list[list[bytes]]:
    assert [status_of(m) for m in _CAPTURE].count("running") == N_RUNNING
    return _CAPTURE


@pytest.fixture(scope="module")
def dr02() -> str:
    """The python of the dranspose 0.2.0 venv; skipped without it, failed under CI=true."""
    return dr02_python()


# A packet as JSON, for comparing with 0.2's across processes; run here and in the 0.2 venv.
SUMMARY = '''
import enum
import numpy as np

def plain(v):
    if isinstance(v, np.ndarray):
        return {"ndarray": [str(v.dtype), list(v.shape), v.tolist()]}
    if isinstance(v, dict):
        return {"dict": [[k, plain(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, enum.Enum):
        return {"enum": [type(v).__name__, v.value]}
    if isinstance(v, float):
        return [type(v).__name__, repr(v)]  # nan == nan
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
from dranspose.middlewares.contrast import parse
res = []
with open(sys.argv[1], "rb") as fh:
    while True:
        try:
            frames = cbor2.load(fh)
        except (cbor2.CBORDecodeEOF, EOFError):
            break
        for as_frames in (False, True):
            data = StreamData(typ="contrast",
                              frames=[zmq.Frame(f) for f in frames] if as_frames else frames)
            res.append(summary(parse(data)))
print(json.dumps(res))
'''

# 0.2's own ingester generator on a real socket: every event message it yields, as hex.
DR02_INGEST = ingest_until_quiet("zmqsub_contrast", "ZmqSubContrastIngester",
                                 "ZmqSubContrastSettings")


# === parser ===


@pytest.mark.parametrize("as_frames", [False, True])
def test_parse_every_message_of_the_capture(capture: list[list[bytes]], as_frames: bool) -> None:
    packets = [parse(sd([zmq.Frame(f) for f in m] if as_frames else m)) for m in capture]
    kinds = [type(p) for p in packets]
    assert kinds.count(ContrastHeartbeat) == 4
    assert kinds.count(ContrastRunning) == N_RUNNING
    started = next(p for p in packets if isinstance(p, ContrastStarted))
    assert started.scannr == 2 and started.description == "mesh sx -2 2 3 sy -2 2 4 0.1"
    assert started.snapshot["xrf_x"] == 94.99875  # type: ignore[attr-defined]
    finished = next(p for p in packets if isinstance(p, ContrastFinished))
    assert finished.path == started.path
    first = next(p for p in packets if isinstance(p, ContrastRunning))
    assert first.dt == pytest.approx(2.410903215408325)
    pseudo = first.pseudo  # type: ignore[attr-defined]
    assert isinstance(pseudo["x"], np.ndarray) and pseudo["x"][0] == pytest.approx(-2.00405186)
    assert first.xspress3["type"] == "Link"  # type: ignore[attr-defined]


def test_parse_builds_what_pydantic_validation_builds(capture: list[list[bytes]]) -> None:
    """The fast path gives 0.2's models exactly: fields, extras, their order, fields_set."""
    for msg in capture:
        ours = parse(sd(msg))
        theirs = ContrastPacket.validate_python(pickle.loads(msg[0]))
        assert summary(ours) == summary(theirs)
        assert list(ours.model_dump()) == list(theirs.model_dump())
        assert repr(ours) == repr(theirs)


def test_parse_matches_dranspose_02_field_by_field(
    capture: list[list[bytes]], dr02: str, tmp_path: Path
) -> None:
    theirs = run_dr02(DR02_PARSE, CAPTURES / CAPTURE)
    ours = [json.loads(json.dumps(summary(parse(sd(frames)))))
            for m in capture for frames in (m, [zmq.Frame(f) for f in m])]
    assert len(ours) == len(theirs) == 2 * len(capture)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"message {i // 2}"
    assert sum(t["cls"] == "ContrastRunning" for t in theirs) == 2 * N_RUNNING


def test_parse_is_as_lax_as_pydantic() -> None:
    # 0.2's models default the status: a dict with a dt and no status is a running packet.
    assert isinstance(parse(sd([pickle.dumps({"dt": 1.0})])), ContrastRunning)
    running = parse(sd([pickle.dumps(OrderedDict([("dt", 2), ("status", "running")]))]))
    assert isinstance(running, ContrastRunning) and type(running.dt) is float
    started = parse(sd([pickle.dumps({"status": "started", "path": "/p", "scannr": "7",
                                      "description": "d"})]))
    assert isinstance(started, ContrastStarted) and started.scannr == 7
    beat = parse(sd([pickle.dumps({"status": "heartbeat", "ignored": 1})]))
    assert isinstance(beat, ContrastHeartbeat) and beat.model_dump() == {"status": "heartbeat"}


def test_to_stream_data_round_trips(capture: list[list[bytes]]) -> None:
    for msg in capture:
        first = parse(sd(msg))
        again = parse(first.to_stream_data())
        assert first.to_stream_data().typ == "contrast"
        assert summary(again) == summary(first)


def _evil_pickle() -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo pwned",))

    return pickle.dumps({"status": "running", "dt": 1.0, "x": Evil()})


@pytest.mark.parametrize(("frames", "words"), [
    ([], "0 frames"),
    ([b"a", b"b"], "2 frames"),
    ([b"not a pickle"], "not a valid pickle"),
    ([_evil_pickle()], "posix.system is not plain data"),
    ([pickle.dumps([1, 2])], "pickled list, expected a dict"),
    ([pickle.dumps({"status": "paused"})], "field 'status' is 'paused'"),
    ([pickle.dumps({"x": 1.0})], "no field 'status' and fits no packet: ContrastStarted field"),
    ([pickle.dumps({"status": None})], "field 'status' is None"),
    ([pickle.dumps({"status": "started", "path": "/p", "description": "d"})],
     "field 'scannr': Field required"),
    ([pickle.dumps({"status": "running", "dt": "soon"})], "field 'dt'"),
])
def test_parse_names_what_is_wrong(frames: list[bytes], words: str) -> None:
    with pytest.raises(ContrastDecodeError) as info:
        parse(sd(frames))
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_refuses_other_typs(capture: list[list[bytes]]) -> None:
    with pytest.raises(ContrastDecodeError, match="typ 'STINS'"):
        parse(StreamData(typ="STINS", frames=capture[0]))


# === framer ===


def test_framer_forms_0_2_events(capture: list[list[bytes]]) -> None:
    framer = ContrastFramer()
    out = [m for frames in capture for m in framer.feed(frames)]
    assert [k for k, _ in out] == [START] + [DATA] * N_RUNNING + [END]
    assert [status_of(f) for _, f in out] == ["started"] + ["running"] * N_RUNNING + ["finished"]
    running = [m for m in capture if status_of(m) == "running"]
    assert all(f is m for (_, f), m in zip(out[1:-1], running, strict=True))  # not copied
    beat = next(m for m in capture if status_of(m) == "heartbeat")
    assert framer.feed(beat) == ()


@pytest.mark.parametrize("frames", [[], [b"garbage"], [_evil_pickle()],
                                    [pickle.dumps({"status": "x"})]])
def test_framer_raises_frame_errors(frames: list[bytes]) -> None:
    with pytest.raises(FrameError) as info:
        ContrastFramer().feed(frames)
    assert info.value.field in ("frame 0", "payload")


# === fuzzing ===

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=6) | st.integers(), inner, max_size=3) | st.tuples(inner),
    max_leaves=8)
_dicts = st.fixed_dictionaries(
    {}, optional={"status": st.sampled_from(["started", "running", "finished", "heartbeat"])
                  | _values, "dt": st.floats() | _values, "path": st.text() | _values,
                  "scannr": st.integers() | _values, "description": st.text() | _values,
                  "snapshot": _values, 7: _values})
_pickles = (_dicts | _values).map(pickle.dumps)
_frame = _pickles | st.binary(max_size=60) | st.sampled_from([m[0] for m in _CAPTURE[:4]]) | (
    _pickles.flatmap(lambda p: st.integers(0, max(len(p) - 1, 0)).map(lambda n: p[:n])))
_fuzz = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.lists(_frame, max_size=2))
def test_fuzz_parse_raises_only_decode_errors(frames: list[bytes]) -> None:
    try:
        packet = parse(sd(frames))
    except ContrastDecodeError:
        return
    assert isinstance(packet, _PACKETS)
    # Whatever the fast path accepts, pydantic accepts the same way.
    assert summary(packet) == summary(ContrastPacket.validate_python(pickle.loads(frames[0])))


@_fuzz
@given(st.lists(st.lists(_frame, min_size=1, max_size=2), max_size=6))
def test_fuzz_framer_raises_only_frame_errors(messages: list[list[bytes]]) -> None:
    framer = ContrastFramer()
    for frames in messages:
        try:
            for _kind, framed in framer.feed(frames):
                assert isinstance(parse(sd(framed[:1])), _PACKETS)
        except FrameError as exc:
            assert exc.field


# === the ingester, over real sockets ===



def _check_series(got: list[tuple[int, dict[str, Any]]], capture: list[list[bytes]]) -> None:
    assert [e for e, _ in got] == list(range(N_RUNNING + 2))
    streams = [s["con"] for _, s in got]
    assert all(s.typ == "contrast" for s in streams)
    expected = [m for m in capture if status_of(m) != "heartbeat"]
    assert [[as_bytes(f) for f in s.frames] for s in streams] == expected
    packets = [parse(s) for s in streams]
    assert [type(p) for p in packets] == (
        [ContrastStarted] + [ContrastRunning] * N_RUNNING + [ContrastFinished])


def test_ingester_forwards_the_capture(harness: Harness, capture: list[list[bytes]]) -> None:
    got = stream_capture(harness, ZmqSubContrastIngester, capture, N_RUNNING + 2,
                         ["con"], exact=True)[1]
    _check_series(got, capture)
    ing = harness.ingesters[-1]
    c = wait_for(lambda: (c := ing.counter_values()).forwarded == N_RUNNING + 2 and c)
    assert c.malformed == 0 and c.discarded_outside_scan == 0


def test_ingester_forms_the_events_dranspose_02_forms(
    capture: list[list[bytes]], dr02: str, tmp_path: Path
) -> None:
    sender = CaptureSender("PUB")
    try:
        proc = spawn_dr02(DR02_INGEST, sender.url, "1.5")
        sender.send(capture)
        out = dr02_output(proc).decode()
    finally:
        sender.close()
    theirs = [(typ, [bytes.fromhex(f) for f in frames]) for typ, frames in json.loads(out)]
    framer = ContrastFramer()
    ours = [(framer.typ, [as_bytes(f) for f in framed])
            for m in capture for _k, framed in framer.feed(m)]
    assert len(theirs) == N_RUNNING + 2
    assert ours == theirs


def test_ingester_counts_malformed_messages_and_goes_on(
    harness: Harness, capture: list[list[bytes]],
) -> None:
    by = {s: [m for m in capture if status_of(m) == s]
          for s in ("heartbeat", "started", "running", "finished")}
    messages = (
        by["running"][:1]  # before the start: 1 malformed
        + by["heartbeat"] + by["started"]
        + [[b"not a pickle"], [_evil_pickle()], [pickle.dumps([1])],  # 3 malformed
           [pickle.dumps({"status": "running"})], [b"\x80\x04"]]  # no dt, truncated: 2
        + by["running"][:3] + by["heartbeat"][:1] + by["started"]  # a second start: 1
        + by["running"][3:5] + by["finished"]
        + by["running"][5:6]  # after the end: discarded outside the scan
    )
    got = stream_capture(harness, ZmqSubContrastIngester, messages, 7, ["con"], exact=True)[1]
    streams = [s["con"] for _, s in got]
    assert [status_of(s.frames) for s in streams] == (
        ["started"] + ["running"] * 5 + ["finished"])
    ing = harness.ingesters[-1]
    c = wait_for(lambda: (c := ing.counter_values()).discarded_outside_scan == 1 and c,
                 what="the message after the end discarded")
    assert c.malformed == 7
    assert c.forwarded == 7


class WrappingIngester(ZmqSubContrastIngester):
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


def test_user_subclass_wrapping_run_source(harness: Harness, capture: list[list[bytes]]) -> None:
    got = stream_capture(harness, WrappingIngester, capture, N_RUNNING + 2, ["con"], exact=True)[1]
    _check_series(got, capture)
    assert isinstance(harness.ingesters[-1], WrappingIngester)


def test_ingester_by_name_and_settings() -> None:
    assert ingester_class("ZmqSubContrastIngester") is ZmqSubContrastIngester
    cfg = ZmqSubContrastSettings(upstream_url="tcp://127.0.0.1:9999", ingester_streams=["x"],
                                 build_meta_file=None)
    ing = ZmqSubContrastIngester(cfg)
    try:
        assert ing._streaming_contrast_settings is cfg
        assert ZmqSubContrastIngester.settings_class is ZmqSubContrastSettings
    finally:
        ing.close()
