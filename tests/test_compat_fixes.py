"""The 0.2 surface that moved or was missing, and two defects found running 0.2's tests here.

Names at 0.2's paths (``worker.WorkerSettings``, ``protocol.EnsembleState.get_workers``,
``distributed.DistributedService``, ``helpers.utils.cancel_and_wait``/``done_callback``,
``helpers.h5dict``/``h5types``, ``replay.get_internals``, ``dump_path=Path(...)``), the
reducer's parameters hash before any scan, the controller's ``parameters-<uuid>.cbor`` against
0.2's own writer, the reducer/debug-worker apps surviving a second startup, and ``.cbors``
dumps read by a 0.2-style ``cbor2.load`` loop under cbor2 5 (the 0.2 venv) and 6.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
import redis
from packaging.requirements import Requirement

from dranspose_fast.api.server import HttpThread
from dranspose_fast.controller.dumps import write_scan_dumps
from dranspose_fast.dump import read_dump, write_dump
from dranspose_fast.event import InternalWorkerMessage, StreamData
from dranspose_fast.helpers.utils import parameters_hash
from dranspose_fast.protocol import ParameterName, WorkParameter
from dranspose_fast.runtime.redis_messages import Keys
from tests.compat.dr02 import dr02_python, dr02_python_or_none
from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent



def run_py(python: str, code: str, *args: str, path: str | None = None,
           stdin: str | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": path} if path else None
    res = subprocess.run([python, "-c", textwrap.dedent(code), *args], capture_output=True,
                         text=True, check=False, env=env, cwd=ROOT, input=stdin)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


# === names at 0.2's paths ===


def test_worker_settings_and_names_at_the_worker_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from dranspose_fast.runtime import settings
    from dranspose_fast.worker import RedisException, WorkerSettings, random_worker_name

    assert WorkerSettings is settings.WorkerSettings
    monkeypatch.setenv("WORKER_NAME", "w7")
    monkeypatch.setenv("WORKER_TAGS", '["debug", "generic"]')
    monkeypatch.setenv("WORKER_CLASS", "tests.e2e_classes:RecordWorker")
    ws = WorkerSettings()
    assert (ws.worker_name, ws.worker_tags, ws.worker_class) == (
        "w7", {"debug", "generic"}, "tests.e2e_classes:RecordWorker")
    assert random_worker_name() != random_worker_name()
    assert issubclass(RedisException, Exception)


def test_distributed_service_is_the_base_of_every_service() -> None:
    from dranspose_fast.debug_worker import DebugWorker
    from dranspose_fast.distributed import DistributedService, DistributedSettings
    from dranspose_fast.ingester import Ingester
    from dranspose_fast.reducer import Reducer
    from dranspose_fast.worker import Worker

    for cls in (Ingester, Worker, Reducer, DebugWorker):
        assert issubclass(cls, DistributedService), cls
    assert "redis_dsn" in DistributedSettings.model_fields


def test_protocol_names_of_02() -> None:
    from dranspose_fast.protocol import ProtocolException, WorkAssignment, WorkAssignmentList

    got = WorkAssignmentList.validate_json(
        b'[{"event_number": 3, "assignments": {"a": ["w1"]}}]')
    assert got == [WorkAssignment(event_number=3, assignments={"a": ["w1"]})]
    assert issubclass(ProtocolException, Exception)
    from dranspose_fast.replay import ParamList

    [param] = ParamList.validate_json(b'[{"name": "roi", "data": "x,y"}]')
    assert (param.name, param.data) == ("roi", b"x,y")


def test_zmqpull_single_settings_accept_a_path(tmp_path: Path) -> None:
    from dranspose_fast.ingesters.zmqpull_single import ZmqPullSingleSettings

    target = tmp_path / "eiger.cbors"
    cfg = ZmqPullSingleSettings(ingester_streams=["eiger"], upstream_url="tcp://127.0.0.1:9999",
                                dump_path=target)
    assert cfg.dump_path == str(target)
    with pytest.raises(ValueError, match="dump_path"):
        ZmqPullSingleSettings(ingester_streams=["eiger"], upstream_url="tcp://127.0.0.1:9",
                              dump_path=3)


def test_cancel_and_wait_stops_the_task_and_keeps_its_errors_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dranspose_fast.helpers.utils import cancel_and_wait, done_callback

    cleaned: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append("forever")

    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("broke while stopping") from None

    async def crashes() -> None:
        raise ValueError("boom")

    async def main() -> None:
        sleeper = asyncio.create_task(forever())
        sleeper.add_done_callback(done_callback)
        bad = asyncio.create_task(fails_on_cancel())
        await asyncio.sleep(0)
        await cancel_and_wait(sleeper)
        assert sleeper.cancelled() and cleaned == ["forever"]
        await cancel_and_wait(bad)  # logged, not raised
        assert bad.done()
        crash = asyncio.create_task(crashes())
        crash.add_done_callback(done_callback)
        await asyncio.gather(crash, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
        # cancelling the waiter itself still cancels it
        outer = asyncio.create_task(cancel_and_wait(asyncio.create_task(forever())))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert any("broke while stopping" in m for m in messages), messages
    assert any("boom" in m for m in messages), messages
    assert not any("CancelledError" in m for m in messages), messages


def _messages(n: int) -> list[InternalWorkerMessage]:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return [
        InternalWorkerMessage(event_number=i, created_at=at, streams={
            "eiger": StreamData(typ="STINS", frames=[json.dumps({"frame": i}).encode(),
                                                     bytes([i % 256]) * (100 + 40_000 * (i % 2))]),
            "pcap": StreamData(typ="PCAP", frames=[f"row {i}".encode()]),
        })
        for i in range(n)
    ]


def _summary(msgs: Any) -> list[list[Any]]:
    return [[m.event_number, {n: [s.typ, [bytes(f).hex()[:16] + str(len(bytes(f)))
                                          for f in s.frames]]
                              for n, s in sorted(m.streams.items())}]
            for m in msgs]


def test_replay_get_internals_reads_a_dump(tmp_path: Path) -> None:
    from dranspose_fast.replay import get_internals

    path = tmp_path / "d.cbors"
    write_dump(path, _messages(5))
    assert _summary(get_internals(path)) == _summary(_messages(5))
    assert _summary(get_internals(str(path))) == _summary(read_dump(path))
    with pytest.raises(FileNotFoundError):
        list(get_internals(tmp_path / "missing.cbors"))


def test_h5dict_at_the_helpers_path_answers_in_02_shapes() -> None:
    """The demo app of ``helpers.h5dict``, its responses validated with ``helpers.h5types``."""
    from dranspose_fast.helpers import h5dict, h5types

    assert h5dict.router is __import__("dranspose_fast.api.h5dict", fromlist=["x"]).router
    with HttpThread(h5dict.app) as server:
        base = server.url.rstrip("/")
        root = h5types.H5Root.model_validate(httpx.get(base + "/").json())
        assert root.class_ == "domain"
        top = h5types.H5Group.model_validate(httpx.get(f"{base}/groups/{root.root}").json())
        assert top.linkCount == 9 and top.attributeCount == 1
        links = [h5types.H5Link.model_validate(x)
                 for x in httpx.get(f"{base}/groups/{root.root}/links").json()["links"]]
        by_title = {link.title: link for link in links}
        assert by_title["line"].collection == "groups"
        pairs = h5types.H5Dataset.model_validate(
            httpx.get(f"{base}/datasets/{by_title['pairs'].id}").json())
        assert isinstance(pairs.type, h5types.H5CompType)
        assert [f.name for f in pairs.type.fields] == ["a", "b"]
        assert isinstance(pairs.shape, h5types.H5SimpleShape) and pairs.shape.dims == [2]
        attrs = h5types.H5Attributes.model_validate(
            httpx.get(f"{base}/datasets/{by_title['pairs'].id}/attributes").json())
        assert [a.name for a in attrs.attributes] == ["axes"]
        hello = h5types.H5Dataset.model_validate(
            httpx.get(f"{base}/datasets/{by_title['hello'].id}").json())
        assert isinstance(hello.type, h5types.H5StrType)
        assert isinstance(hello.shape, h5types.H5ScalarShape)
    with pytest.raises(ValueError, match="H5T_"):
        h5types.H5FloatType(base="IEEE_F64LE")


# === the reducer's parameters hash, EnsembleState, the parameter dump ===


def test_ensemble_state_and_reducer_parameters_hash_before_any_scan(ens: Any) -> None:
    from dranspose_fast.protocol import EnsembleState

    ens.controller()
    ens.reducer(cls=None)
    ens.worker("w1", cls=None)
    ens.wait("the controller", lambda: ens.get("/api/v1/config").status_code == 200)

    def state() -> EnsembleState:
        return EnsembleState.model_validate(ens.get("/api/v1/config").json())

    ens.wait("worker and reducer", lambda: state().reducer is not None
             and state().get_workers() == ["w1"])
    # no scan has run: the reducer still reports the controller's parameter version
    ens.wait("the reducer's parameters hash",
             lambda: state().reducer.parameters_hash is not None)  # type: ignore[union-attr]
    now = state()
    assert now.reducer is not None
    assert now.reducer.parameters_hash == now.parameters_hash
    assert now.parameters_hash == parameters_hash(
        {n: WorkParameter(name=n, data=b"", uuid=u) for n, u in now.parameters_version.items()})
    assert now.get_streams() == []
    python = dr02_python_or_none()
    if python is not None:  # 0.2's own model reads it too
        got = run_py(python, """
            import sys
            from dranspose.protocol import EnsembleState
            state = EnsembleState.model_validate_json(sys.stdin.read())
            print(state.get_workers(), state.reducer.parameters_hash)
        """, stdin=ens.get("/api/v1/config").text)
        assert got.split() == ["['w1']", now.parameters_hash]


def _params() -> dict[ParameterName, WorkParameter]:
    return {
        ParameterName("dump_prefix"): WorkParameter(name="dump_prefix", data=b"/tmp/x-"),
        ParameterName("roi"): WorkParameter(name="roi", data=b'{"x": [1, 2]}'),
        ParameterName("blob"): WorkParameter(name="blob", data=b"a\x00\xffb"),
        ParameterName("text"): WorkParameter(name="text", data="grüß".encode()),
    }


def test_parameters_cbor_keeps_text_as_text_as_02_writes_it(tmp_path: Path) -> None:
    python = dr02_python()
    assert python is not None
    params = _params()
    uid = uuid.uuid4()
    _, ours = write_scan_dumps(f"{tmp_path}/ours-", uid, {"parts": {}, "sequence": []}, params)
    assert ours.endswith(f"parameters-{uid}.cbor")
    spec = {n: p.data.hex() for n, p in params.items()}
    theirs = run_py(python, """
        import asyncio, json, sys, types, uuid
        from dranspose.controller import Controller
        from dranspose.protocol import WorkParameter
        spec = json.loads(sys.argv[1])
        me = types.SimpleNamespace(
            parameters={n: WorkParameter(name=n, data=bytes.fromhex(d)) for n, d in spec.items()},
            mapping=types.SimpleNamespace(parts={}, sequence=[], uuid=uuid.UUID(sys.argv[2])))
        me.parameters["dump_prefix"].data = sys.argv[3].encode()
        asyncio.run(Controller.dump_map_and_parameters(me))
        print(sys.argv[3] + "parameters-" + sys.argv[2] + ".cbor")
    """, json.dumps(spec), str(uid), f"{tmp_path}/theirs-").strip()
    want = cbor2.loads(Path(theirs).read_bytes())
    got = cbor2.loads(Path(ours).read_bytes())
    for records in (want, got):  # the prefix parameter differs by the file name only
        for r in records:
            if r["name"] == "dump_prefix":
                r["data"] = "<prefix>"
    assert sorted(got, key=lambda r: r["name"]) == sorted(want, key=lambda r: r["name"])
    assert {r["name"]: type(r["data"]) for r in got} == {
        "dump_prefix": str, "roi": str, "blob": bytes, "text": str}


def test_parameters_json_when_every_value_is_text(tmp_path: Path) -> None:
    params = {n: p for n, p in _params().items() if n != "blob"}
    _, path = write_scan_dumps(f"{tmp_path}/p-", uuid.uuid4(), {}, params)
    assert path.endswith(".json")
    assert {r["name"]: r["data"] for r in json.loads(Path(path).read_text())} == {
        n: p.data.decode() for n, p in params.items()}


# === defect: a second ASGI startup of reducer:app / debug_worker:app ===


@pytest.mark.parametrize(("module", "role", "name"), [
    ("dranspose_fast.reducer", "reducer", "reducer"),
    ("dranspose_fast.debug_worker", "worker", "dbg-twice"),
])
def test_app_starts_its_service_on_every_startup(
    module: str, role: str, name: str, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``uvicorn <module>:app`` served twice in one process: each serve runs a service."""
    import importlib

    for key, value in {
        "REDIS_URL": redis_url, "REDUCER_URL": f"tcp://127.0.0.1:{free_port()}",
        "WORKER_NAME": name, "BUILD_META_FILE": str(tmp_path / "none.json"),
        "DFAST_CONFIG_INTERVAL": "0.1",
    }.items():
        monkeypatch.setenv(key, value)
    app = importlib.import_module(module).app
    client = redis.Redis.from_url(redis_url)
    key = Keys.config(role, name)
    try:
        for _ in range(2):
            with HttpThread(app):
                wait_for(lambda: client.exists(key), what=f"{role} config after startup")
            wait_for(lambda: not client.exists(key), what=f"{role} config gone after shutdown")
    finally:
        client.close()


# === cbor2 5 and 6: dumps read by a 0.2-style loop ===

LOOP_02 = """
    import sys, cbor2
    from {pkg}.event import message_tag_hook
    n = 0
    with open(sys.argv[1], "rb") as f:
        while True:
            try:
                msg = cbor2.load(f, tag_hook=message_tag_hook)
            except EOFError:
                break
            assert type(msg).__name__ == "InternalWorkerMessage", type(msg)
            n += 1
    print(cbor2.__name__, n)
"""

OUR_READER = """
    import json, sys, cbor2
    from importlib.metadata import version
    from dranspose_fast.replay import get_internals
    msgs = list(get_internals(sys.argv[1]))
    print(json.dumps([version("cbor2"), len(msgs), [m.event_number for m in msgs]]))
"""


def cbor2_pin() -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(Requirement(d) for d in deps if Requirement(d).name == "cbor2")


@pytest.fixture
def dump_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ours.cbors"
    write_dump(path, _messages(7))
    yield path


def test_cbor2_5_reads_our_dump_with_the_02_loop_and_with_our_reader(dump_file: Path) -> None:
    python = dr02_python()
    assert python is not None
    assert run_py(python, LOOP_02.format(pkg="dranspose"), str(dump_file)).split() == [
        "cbor2", "7"]
    version, n, events = json.loads(run_py(python, OUR_READER, str(dump_file), path=str(ROOT)))
    assert version.startswith("5.") and n == 7 and events == list(range(7))


def test_our_reader_under_the_installed_cbor2(dump_file: Path) -> None:
    version, n, events = json.loads(run_py(sys.executable, OUR_READER, str(dump_file)))
    assert n == 7 and events == list(range(7)), version


def test_our_reader_under_cbor2_6(dump_file: Path) -> None:
    """pyproject keeps cbor2 < 6, but a user's environment may hold 6: our reader still works.

    ``scripts/test.sh`` unpacks a cbor2 6 wheel into a folder (``CBOR2_6_PATH``) that this
    test puts first on the path of a child interpreter; under ``CI=true`` it must be there.
    """
    folder = os.environ.get("CBOR2_6_PATH")
    if not folder:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but CBOR2_6_PATH is not set (scripts/test.sh unpacks cbor2 6)")
        pytest.skip("CBOR2_6_PATH not set: run through scripts/test.sh")
    path = os.pathsep.join([folder, str(ROOT)])
    version, n, events = json.loads(run_py(sys.executable, OUR_READER, str(dump_file), path=path))
    assert version.startswith("6."), version
    assert n == 7 and events == list(range(7))


def test_pyproject_pins_a_cbor2_whose_eof_is_an_eoferror() -> None:
    """cbor2 6 made ``CBORDecodeEOF`` a plain ``CBORDecodeError``: the 0.2 loop above would
    raise at the end of every dump.  So the dependency stays below 6."""
    assert not cbor2_pin().specifier.contains("6.0.0")
    assert cbor2_pin().specifier.contains("5.9.0")


def test_the_02_loop_under_our_python(dump_file: Path) -> None:
    """With the cbor2 pyproject allows, 0.2's loop reads our dump to its end."""
    from importlib.metadata import version

    installed = version("cbor2")
    if not cbor2_pin().specifier.contains(installed):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"cbor2 {installed} is installed, outside pyproject's {cbor2_pin()}")
        pytest.skip(f"cbor2 {installed} is installed, outside pyproject's {cbor2_pin()} "
                    "(pip install -e . to follow the pin)")
    out = run_py(sys.executable, LOOP_02.format(pkg="dranspose_fast"), str(dump_file))
    assert out.split() == ["cbor2", "7"]
    assert issubclass(cbor2.CBORDecodeEOF, EOFError)
