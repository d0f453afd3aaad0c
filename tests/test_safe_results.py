"""Pickles from workers, files and detectors are read as data only (issue 11, item 3).

A forged result batch sent over a real ZeroMQ PUSH to a real reducer during a real scan is
refused, counted as a loss and creates no file, while the scan finishes with every genuine
result, whose class the reducer allows through ``DFAST_RESULT_CLASSES``. The unpickler
itself: plain data and numpy round-trip exactly; functions, dotted names, forged numpy
dtypes and a called ``numpy.ndarray`` are refused; parameter files, dumps and the debug
worker's answers go through it too.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from dranspose_fast.debug_worker import decode_last_events
from dranspose_fast.dump import read_dump, write_dump
from dranspose_fast.errors import DumpError, ParameterFileError
from dranspose_fast.event import EventData, StreamData, make_event_data
from dranspose_fast.helpers import safe_pickle
from dranspose_fast.helpers.safe_pickle import UnsafePickleError, allow_list
from dranspose_fast.parameters import load_parameter_file
from dranspose_fast.protocol import StreamName, WorkParameter
from dranspose_fast.replay import replay
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.curve import ClientKeys, CurveSettings, client_keys, secure_client
from dranspose_fast.runtime.settings import ResultSettings
from tests.ensemble import ROOT, Ensemble, uniform
from tests.stins_source import StinsSource

HERE = "tests.test_safe_results"


# === classes the processes of the scan import ===


@dataclasses.dataclass
class Peak:
    """A user's result class: allowed only where DFAST_RESULT_CLASSES names it."""

    event: int
    height: float
    where: Any


class PeakWorker:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def process_event(self, event: EventData, parameters: Any = None, tick: bool = False) -> Any:
        return Peak(event.event_number, event.event_number / 2, np.arange(3) * event.event_number)


class PeakReducer:
    """Publishes what it got, as JSON: the class name, event, height and ``where``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.got: list[Any] = []
        self.publish: dict[str, Any] = {"peaks": "[]", "finished": 0}

    def process_result(self, result: Any, parameters: Any = None) -> None:
        p = result.payload
        self.got.append([type(p).__name__, p.event, p.height, p.where.tolist()])

    def finish(self, parameters: Any = None) -> None:
        self.publish["peaks"] = json.dumps(self.got)
        self.publish["finished"] = 1


class FileMaker:
    """What a compromised worker sends: unpickling it would create ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


class ForgedDtype:
    """``numpy.dtype('V8')`` with the state of an object field at offset 0 and flags 0:
    numpy's own ``__setstate__`` takes it, and ``frombuffer`` then reads pointers."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (np.dtype, ("V8", False, True),
                (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0))


class ForgedFlags:
    """``numpy.dtype('f8')`` whose state claims object flags."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (np.dtype, ("f8", False, True), (3, "<", None, None, None, -1, -1, 63))


def _frombuffer(dtype: Any) -> Any:
    import importlib

    frombuffer = importlib.import_module("numpy._core.numeric")._frombuffer

    class Array:
        def __reduce__(self) -> tuple[Any, ...]:
            return (frombuffer, (b"\x10" * 8, dtype, (1,), "C"))

    return Array()


class CalledNdarray:
    def __reduce__(self) -> tuple[Any, ...]:
        return (np.ndarray, ((1,), "O", b"\x10" * 8))


# === the unpickler ===

VALUES: list[Any] = [
    np.arange(5.0), np.arange(12).reshape(3, 4).T, np.arange(20)[::3], np.zeros((2, 3), order="F"),
    np.float64(2.5), np.int32(-3), np.bool_(True), np.complex64(1 + 2j), np.dtype(">i4"),
    np.array(["ab", "c"]), np.array([b"x"]), np.array(["2020-01-01T01"], dtype="M8[10s]"),
    np.array([1, "x", None, np.arange(2)], dtype=object),
    np.zeros(2, dtype=[("x", "f4"), ("y", "i2", (3,))]),
    np.zeros(2, dtype=np.dtype([("a", "f4"), ("b", "O")], align=True)),
    np.dtype({"names": ["a"], "formats": ["i4"], "titles": ["T"]}),
    np.dtype("f8", metadata={"k": 1}),
    {"roi": np.arange(4, dtype=np.uint16), "sum": 1.5, "hist": [np.zeros(3), (np.ones(2),)],
     "when": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC), "id": uuid.UUID(int=7),
     "od": collections.OrderedDict(a=1), "dd": collections.defaultdict(list, b=[2]),
     "q": collections.deque([np.arange(2)]), "s": {1, 2}, "fs": frozenset([b"a"]),
     "r": range(3), "sl": slice(1, 2), "ba": bytearray(b"x"), "none": None},
]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
                and a.flags.f_contiguous == b.flags.f_contiguous and repr(a) == repr(b))
    return type(a) is type(b) and repr(a) == repr(b)


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_plain_data_and_numpy_come_back_as_pickle_gives_them(value: Any, proto: int) -> None:
    data = pickle.dumps(value, protocol=proto)
    assert same(safe_pickle.loads(data), pickle.loads(data))


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
    | st.tuples(inner, inner), max_leaves=20)


@settings(deadline=None, max_examples=60)
@given(value=json_like, proto=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_any_builtin_data_round_trips(value: Any, proto: int) -> None:
    assert safe_pickle.loads(pickle.dumps(value, protocol=proto)) == value


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path,
                                                                  proto: int) -> None:
    made = tmp_path / "made"
    with pytest.raises(UnsafePickleError, match=r"posix\.system is not plain data"):
        safe_pickle.loads(pickle.dumps(FileMaker(made), protocol=proto))
    assert not made.exists()


@pytest.mark.parametrize("evil, why", [
    (_frombuffer(ForgedDtype()), "object array cannot come from a buffer"),
    (CalledNdarray(), "numpy.ndarray may only be named as the type"),
    (ForgedDtype(), None),  # a dtype built from numpy's constructors, without the forgery
])
def test_forged_numpy_states_are_refused_or_rebuilt_honestly(evil: Any, why: str | None) -> None:
    data = pickle.dumps(evil, protocol=4)
    if why is not None:
        with pytest.raises(UnsafePickleError, match=why):
            safe_pickle.loads(data)
        return
    dtype = safe_pickle.loads(data)
    assert dtype == np.dtype([("a", "O")]) and dtype.flags == np.dtype([("a", "O")]).flags


def test_forged_flags_do_not_reach_the_array() -> None:
    array = safe_pickle.loads(pickle.dumps(_frombuffer(ForgedFlags()), protocol=4))
    assert array.dtype == np.float64 and array.dtype.flags == np.dtype("f8").flags


def test_a_user_class_only_where_it_is_named() -> None:
    peak = Peak(3, 1.5, np.arange(3))
    data = pickle.dumps(peak, protocol=5)
    with pytest.raises(UnsafePickleError, match=f"{HERE}.Peak is not plain data.*"
                                                "DFAST_RESULT_CLASSES"):
        dataplane.decode_result(data, dataplane.result_classes())
    got = dataplane.decode_result(data, dataplane.result_classes([f"{HERE}:Peak"]))
    assert type(got) is Peak and got.event == 3 and same(got.where, peak.where)


@pytest.mark.parametrize("entry, why", [
    ("os.system", "is not module:Name"),
    ("os:path.join", "is not module:Name"),
    ("os:system", "not a class"),
    ("builtins:type", "cannot be allowed"),
    (f"{HERE}:NoSuchClass", "cannot import it"),
    ("numpy:matrix", "cannot be allowed"),  # an ndarray subclass: its constructor reads memory
])
def test_only_classes_can_be_allowed(entry: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        allow_list([entry])


def test_the_setting_takes_a_list_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFAST_RESULT_CLASSES", f"{HERE}:Peak, {HERE}:PeakWorker")
    assert ResultSettings().result_classes == (f"{HERE}:Peak", f"{HERE}:PeakWorker")
    monkeypatch.setenv("DFAST_RESULT_CLASSES", json.dumps([f"{HERE}:Peak"]))
    assert ResultSettings().result_classes == (f"{HERE}:Peak",)
    monkeypatch.setenv("DFAST_RESULT_CLASSES", "mypkg.results.Peak")
    with pytest.raises(ValueError, match="dfast_result_classes"):
        ResultSettings()


# === files: parameter pickles only by name, dumps, the debug worker's answers ===


def test_parameter_pickles_are_read_only_by_name_and_as_data(tmp_path: Path) -> None:
    good = [WorkParameter(name="roi", data=b"[1, 2]"), {"name": "mask", "data": b"\x00\x01"}]
    for name in ("p.pkl", "p.pickle"):
        (tmp_path / name).write_bytes(pickle.dumps(good))
        params = load_parameter_file(tmp_path / name)
        assert {n: p.data for n, p in params.items()} == {"roi": b"[1, 2]", "mask": b"\x00\x01"}
    made = tmp_path / "made"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps([FileMaker(made)]))
    with pytest.raises(ParameterFileError, match=r"evil.pkl: .*posix\.system is not plain data"):
        load_parameter_file(tmp_path / "evil.pkl")
    (tmp_path / "evil.json").write_bytes(pickle.dumps([FileMaker(made)]))
    with pytest.raises(ParameterFileError, match=r"evil.json: .*not JSON.*not CBOR.*a pickle is "
                                                 r"read only from a file named \*.pkl"):
        load_parameter_file(tmp_path / "evil.json")
    (tmp_path / "good.data").write_bytes(pickle.dumps(good))  # a pickle not named so
    with pytest.raises(ParameterFileError, match="only from a file named"):
        load_parameter_file(tmp_path / "good.data")
    assert not made.exists()


def test_pickled_dumps_refuse_code_and_forged_arrays(tmp_path: Path) -> None:
    made = tmp_path / "made"
    ok = pickle.dumps(next(iter(read_dump(_cbor_dump(tmp_path)))))
    for evil in (FileMaker(made), _frombuffer(ForgedDtype())):
        path = tmp_path / "evil.pkls"
        path.write_bytes(ok + pickle.dumps(evil))
        reader = read_dump(path)
        assert next(reader).event_number == 0
        with pytest.raises(DumpError, match=rf"evil.pkls: bad pickle at byte offset {len(ok)}"):
            next(reader)
    assert not made.exists()


def _cbor_dump(tmp_path: Path) -> Path:
    from dranspose_fast.event import make_internal

    path = tmp_path / "one.cbors"
    write_dump(path, [make_internal(0, {StreamName("a"): StreamData(typ="STINS",
                                                                     frames=[b"x"])})])
    return path


def test_the_debug_workers_answers_are_read_as_data() -> None:
    events = [make_event_data(4, {"eiger": StreamData(typ="STINS", frames=[b"abc"])})]
    got = decode_last_events(pickle.dumps(events))
    assert got == events and type(got[0]) is EventData
    with pytest.raises(UnsafePickleError, match="posix.system"):
        decode_last_events(pickle.dumps([FileMaker(Path("/nonexistent/x"))]))
    with pytest.raises(UnsafePickleError, match="not a list of EventData"):
        decode_last_events(pickle.dumps({"a": 1}))


# === replay reads results as the reducer does ===


def test_replay_refuses_results_of_classes_not_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DFAST_RESULT_CLASSES", raising=False)
    report = replay(f"{HERE}:PeakWorker", f"{HERE}:PeakReducer",
                    source="tests.classes02:CountingSource", progress=False)
    assert report.results == 0 and report.reducer_errors == report.deliveries > 0
    monkeypatch.setenv("DFAST_RESULT_CLASSES", f"{HERE}:Peak")
    report = replay(f"{HERE}:PeakWorker", f"{HERE}:PeakReducer",
                    source="tests.classes02:CountingSource", progress=False)
    assert report.results == report.deliveries > 0 and report.reducer_errors == 0


# === a real scan, with a forged batch sent to the reducer's port ===


def peaks(ens: Ensemble) -> list[Any]:
    import h5pyd

    out: list[Any] = []

    def finished() -> bool:
        with h5pyd.File("/", "r", endpoint=ens.reducer_url) as f:
            if int(f["finished"][()]) != 1:
                return False
            out.extend(json.loads(f["peaks"][()]))
            return True

    ens.wait("the reducer's finish", finished)
    return out


def test_forged_results_are_refused_counted_and_the_scan_finishes(
        ens: Ensemble, source: StinsSource, tmp_path: Path) -> None:
    ens.env["DFAST_RESULT_CLASSES"] = f"{HERE}:Peak"
    ens.controller()
    ens.reducer(f"{HERE}:PeakReducer")
    for name in ("w0", "w1"):
        ens.worker(name, f"{HERE}:PeakWorker")
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], ["w0", "w1"])
    uid = uuid.UUID(ens.sequence(uniform(["eiger"], 10)))

    made = tmp_path / "made-by-a-forged-result"
    forged = [(1, pickle.dumps(FileMaker(made), protocol=5)),
              (2, pickle.dumps(_frombuffer(ForgedDtype()), protocol=4)),
              (3, b"\x80\x05 not a pickle")]
    url = ens.commands["reducer"][1]["REDUCER_URL"]
    ctx = zmq.Context()
    # Outsiders: no CURVE, and a fresh keypair that knows the server's public key. Both are
    # refused at the handshake, before any byte reaches Python, and counted.
    outsiders = [ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)]
    fresh_public, fresh_secret = zmq.curve_keypair()
    server = client_keys(CurveSettings())
    assert server is not None, "the test session runs with CURVE on (tests/conftest.py)"
    secure_client(outsiders[1], ClientKeys(fresh_public, fresh_secret, server.server))
    # A compromised worker holds the ensemble's client key: CURVE lets it in, and the
    # restricted unpickler refuses what it sends.
    insider = ctx.socket(zmq.PUSH)
    secure_client(insider, server)
    for push in (*outsiders, insider):
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(url)
        try:
            # an outsider's connection may already be refused: PUSH then has no peer and a
            # blocking send would wait for ever (the handshake is tried either way)
            push.send_multipart(dataplane.encode_results("intruder", None, forged, scan=uid),
                                flags=zmq.NOBLOCK if push in outsiders else 0)
        except zmq.Again:
            pass

    def refused() -> bool:
        reducer = ens.get("/api/v1/config").json()["reducer"]
        return bool(reducer["refused_peers"] >= 2)

    ens.wait("both outsiders refused", refused)
    for push in (*outsiders, insider):
        push.close(linger=0 if push in outsiders else 2000)
    ctx.term()

    source.send_series()
    assert ens.wait_finished()["finished"]
    got = peaks(ens)
    # every genuine result, as the user's class: start and end went to both workers
    assert sorted(p[1] for p in got) == [0, 0, *range(1, 11), 11, 11]
    assert {p[0] for p in got} == {"Peak"}
    assert all(p[2] == p[1] / 2 and p[3] == [0, p[1], 2 * p[1]] for p in got)

    def counted() -> bool:
        dropped = ens.get("/api/v1/status").json()["dropped"]
        return bool(dropped.get("reducer.undecodable_results") == len(forged))

    ens.wait("the refusals counted as a loss", counted)
    assert not made.exists()
    log = ens.log("reducer")
    assert "result 1 of intruder refused (1 undecodable so far)" in log
    assert "refused a peer's handshake" in log  # the outsiders, at CURVE's door
    assert "refused a CURVE client whose key" in log
    assert "posix.system is not plain data" in log


def test_a_reducer_with_a_bad_result_class_stops_in_one_line(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "DFAST_RESULT_CLASSES": "os:system",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "dranspose_fast.cli", "reducer", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dranspose-fast reducer: error: os:system: is a builtin_function_or_method, not a "
        "class; only classes can be allowed"]
