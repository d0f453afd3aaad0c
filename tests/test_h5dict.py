"""The h5dict HDF5-REST partial view: real h5pyd over uvicorn, and every error path in-process."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import h5pyd
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from h5json.objid import isValidUuid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter

from dranspose_fast.api.h5dict import create_app
from dranspose_fast.api.h5types import make_id, parse_id

PAIR = np.dtype({"names": ["a", "b"], "formats": ["<f8", "<i8"]})
PADDED = np.dtype(
    {"names": ["x", "y"], "formats": ["u1", ">f4"], "offsets": [0, 8], "itemsize": 16}
)
NUMERIC = [f"{o}{k}{n}" for o in "<>" for k, n in [("i", 1), ("i", 2), ("i", 4), ("i", 8),
           ("u", 1), ("u", 2), ("u", 4), ("u", 8), ("f", 2), ("f", 4), ("f", 8)]]  # fmt: skip
LONG = "a_group_name_long_enough_to_need_a_hashed_id"


def make_publish() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    typed = {f"t{i}": (rng.random((3, 4)) * 100).astype(dt) for i, dt in enumerate(NUMERIC)}
    return {
        "image": np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000),
        "ones": np.ones((1000, 1000)),
        "image_attrs": {"listattr": [42, 43, 44, 45], "unit": "counts"},
        "f32": np.linspace(0, 1, 7, dtype=np.float32),
        "big_endian": np.arange(100, dtype=">u8").reshape(10, 10),
        "big_endian_attrs": {"NXdata": "NXspecial", "ids": np.arange(3, dtype=">u8")},
        "composite": np.array([(0.5, 1), (1.5, -2)], dtype=PAIR),
        "composite_attrs": {"axes": ["I", "q"], "pair": np.array([(2.5, 3)], dtype=PAIR)},
        "padded": np.array([(1, 2.5), (3, -4.0)], dtype=PADDED),
        "flags": np.array([True, False, True]),
        "live": 34,
        "ratio": 2.5,
        "hello": "World",
        "names": ["alpha", "beta", "gamma"],
        "scalar32": np.float32(3.5),
        "ints": [1, -2, 3],
        "typed": typed,
        "oned": {"data": np.ones(42), "data_attrs": {"long_name": "photons"}},
        "oned_attrs": {"NX_class": "NXdata", "signal": "data"},
        LONG: {"another_rather_long_dataset_name": np.arange(5, dtype=np.int16)},
        "_attrs": {"NX_class": "NXentry", "pair": np.array([(0.5, 1)], dtype=PAIR)},
    }


class Served:
    """A uvicorn server in a thread on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Served, dict[str, Any], threading.RLock]]:
    data = make_publish()
    lock = threading.RLock()
    srv = Served(create_app(lambda: (data, lock), prefix="/results", lock_timeout=0.2))
    yield srv, data, lock
    srv.stop()


@pytest.fixture()
def h5file(served: tuple[Served, dict[str, Any], threading.RLock]) -> Iterator[Any]:
    srv = served[0]
    f = h5pyd.File("/", "r", endpoint=f"http://127.0.0.1:{srv.port}/results")
    yield f
    f.close()


# === Real h5pyd client ===


def test_numeric_dtypes_preserved(h5file: Any) -> None:
    expected = make_publish()
    for name in ["image", "f32", "big_endian", "composite", "flags", "scalar32", "ints"]:
        got = h5file[name][()]
        want = np.asarray(expected[name])
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want)
    for key, arr in expected["typed"].items():
        got = h5file[f"typed/{key}"][()]
        assert got.dtype == arr.dtype, key  # every byte order and width survives
        np.testing.assert_array_equal(got, arr)


def test_padded_compound_and_python_scalars(h5file: Any) -> None:
    got = h5file["padded"][()]
    assert got.dtype.names == ("x", "y")
    assert got.dtype.itemsize == 5  # packed on the wire
    assert got["x"].tolist() == [1, 3] and got["y"].tolist() == [2.5, -4.0]
    assert h5file["live"][()] == 34 and h5file["live"].dtype == np.int64
    assert h5file["ratio"][()] == 2.5
    assert h5file["hello"].asstr()[()] == "World"
    assert h5file["names"].asstr()[()].tolist() == ["alpha", "beta", "gamma"]
    assert h5file["names"].asstr()[1:3].tolist() == ["beta", "gamma"]
    assert h5file["scalar32"].shape == ()


def test_attributes(h5file: Any) -> None:
    assert h5file.attrs["NX_class"] == "NXentry"
    assert h5file.attrs["pair"].tolist() == [(0.5, 1)]
    assert h5file["image"].attrs["listattr"].tolist() == [42, 43, 44, 45]
    ids = h5file["big_endian"].attrs["ids"]
    assert ids.dtype == np.dtype(">u8") and ids.tolist() == [0, 1, 2]
    assert list(h5file["composite"].attrs["axes"]) == ["I", "q"]
    assert h5file["composite"].attrs["pair"].tolist() == [(2.5, 3)]
    assert h5file["oned"].attrs["NX_class"] == "NXdata"
    assert h5file["oned/data"].attrs["long_name"] == "photons"
    assert "image_attrs" not in h5file  # attribute dicts are not links


def test_slices_match_numpy(h5file: Any) -> None:
    img = make_publish()["image"]
    np.testing.assert_array_equal(h5file["image"][2:5, 7:20], img[2:5, 7:20])
    np.testing.assert_array_equal(h5file["image"][10:200:7, 3], img[10:200:7, 3])
    np.testing.assert_array_equal(
        h5file["typed/t7"][1:3, ::2], make_publish()["typed"]["t7"][1:3, ::2]
    )


def test_long_paths_get_valid_hashed_ids(h5file: Any) -> None:
    dset = h5file[f"{LONG}/another_rather_long_dataset_name"]
    assert dset[()].tolist() == [0, 1, 2, 3, 4]
    assert isValidUuid(dset.id.id) and "h5hash-" in dset.id.id


def test_root_url_form_and_stateless_updates() -> None:
    data: dict[str, Any] = {"x": np.arange(4)}
    srv = Served(create_app(lambda: (data, nullcontext())))
    try:
        with h5pyd.File(f"http://127.0.0.1:{srv.port}/", "r") as f:
            assert f["x"][()].tolist() == [0, 1, 2, 3]
        data["x"] = np.arange(6) * 2  # a new shape is seen by the next reader
        data["g"] = {"y": 1.5}
        with h5pyd.File(f"http://127.0.0.1:{srv.port}/", "r") as f:
            assert f["x"][()].tolist() == [0, 2, 4, 6, 8, 10] and f["g/y"][()] == 1.5
    finally:
        srv.stop()


def test_held_lock_makes_reads_fail_fast(
    served: tuple[Served, dict[str, Any], threading.RLock], h5file: Any
) -> None:
    _, _, lock = served
    h5file.id.db.plugin.http_conn._s.mount("http://", HTTPAdapter(max_retries=0))
    with lock:
        t0 = time.monotonic()
        with pytest.raises(OSError):
            h5file["f32"][()]
        assert time.monotonic() - t0 < 5
    assert h5file["f32"][()].tolist() == make_publish()["f32"].tolist()


def test_gzip_only_when_accepted(served: tuple[Served, dict[str, Any], threading.RLock]) -> None:
    url = (
        f"http://127.0.0.1:{served[0].port}/results/datasets/{make_id('datasets', ('ones',))}/value"
    )
    zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"})
    raw = httpx.get(url, headers={"Accept-Encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < 20_000
    assert "content-encoding" not in raw.headers
    assert int(raw.headers["content-length"]) == 8_000_000
    assert zipped.content == raw.content == np.ones((1000, 1000)).tobytes()
    small = httpx.get(
        url.replace(make_id("datasets", ("ones",)), make_id("datasets", ("image",))),
        params={"select": "[2:5,7:20]"},
    )
    assert small.content == make_publish()["image"][2:5, 7:20].tobytes()


# === In-process: ids, errors, bodies ===


@pytest.fixture(scope="module")
def client() -> Iterator[tuple[TestClient, dict[Any, Any]]]:
    data: dict[Any, Any] = make_publish()
    data.update(
        {
            "nothing": None,
            "objects": np.array([object(), 1], dtype=object),
            "complex": np.ones(3, dtype=np.complex128),
            "ragged": [[1, 2], [3]],
            "mixed": ["a", 1],
            "huge": 2**70,
            "nan": float("nan"),
            7: "non-string key",
            "badattr_attrs": 5,
            "badattr": 1,
            "odd_attrs": {"ok": 1, "none": None},
            "odd": 2,
        }
    )
    with TestClient(create_app(lambda: (data, nullcontext()))) as tc:
        yield tc, data


def did(*parts: str) -> str:
    return make_id("datasets", parts)


def gid(*parts: str) -> str:
    return make_id("groups", parts)


def test_ids_follow_the_0_2_form(client: tuple[TestClient, dict[Any, Any]]) -> None:
    tc, _ = client
    assert tc.get("/").json()["root"] == "g-h5dict-2F"
    links = {ln["title"]: ln for ln in tc.get("/groups/g-h5dict-2F/links").json()["links"]}
    assert links["image"]["id"] == "d-h5dict-2F696D616765"  # 0.2's h5dict id of /image
    assert links["oned"]["collection"] == "groups"
    assert "image_attrs" not in links and "_attrs" not in links and 7 not in links
    group = tc.get("/groups/g-h5dict-2F").json()
    assert group["linkCount"] == len(links)
    assert group["attributeCount"] == 2
    hsds_root = tc.get("/", params={"getobjs": 1}).json()["root"]
    assert isValidUuid(hsds_root) and parse_id(hsds_root, "groups").parts == ()


def test_dataset_descriptions(client: tuple[TestClient, dict[Any, Any]]) -> None:
    tc, _ = client
    img = tc.get(f"/datasets/{did('image')}").json()
    assert img["shape"] == {"class": "H5S_SIMPLE", "dims": [1000, 1000]}
    assert img["type"] == {"class": "H5T_FLOAT", "base": "H5T_IEEE_F64LE"}
    assert img["attributeCount"] == 2
    be = tc.get(f"/datasets/{did('big_endian')}").json()["type"]
    assert be == {"class": "H5T_INTEGER", "base": "H5T_STD_U64BE"}
    comp = tc.get(f"/datasets/{did('composite')}").json()["type"]
    assert comp["class"] == "H5T_COMPOUND"
    assert [f["name"] for f in comp["fields"]] == ["a", "b"]
    assert comp["fields"][1]["type"]["base"] == "H5T_STD_I64LE"
    flags = tc.get(f"/datasets/{did('flags')}").json()["type"]
    assert flags["class"] == "H5T_ENUM" and flags["base"]["base"] == "H5T_STD_I8LE"
    live = tc.get(f"/datasets/{did('live')}").json()
    assert live["shape"] == {"class": "H5S_SCALAR"}
    assert live["type"]["base"] == "H5T_STD_I64LE"
    assert tc.get(f"/datasets/{did('hello')}").json()["type"]["class"] == "H5T_STRING"


def test_values_json_and_bytes(client: tuple[TestClient, dict[Any, Any]]) -> None:
    tc, _ = client
    assert tc.get(f"/datasets/{did('live')}/value").json() == {"value": 34}
    assert tc.get(f"/datasets/{did('names')}/value").json() == {"value": ["alpha", "beta", "gamma"]}
    ints = tc.get(f"/datasets/{did('ints')}/value")
    assert ints.headers["content-type"] == "application/octet-stream"
    assert ints.content == (1).to_bytes(8, "little") + (-2).to_bytes(8, "little", signed=True) + (
        3
    ).to_bytes(8, "little")
    assert np.isnan(json.loads(tc.get(f"/datasets/{did('nan')}/value").text)["value"])
    first3 = tc.get(f"/datasets/{did('f32')}/value", params={"select": "[3]"})
    assert first3.content == np.linspace(0, 1, 7, dtype=np.float32)[:3].tobytes()  # bare n is :n
    posted = tc.post(f"/datasets/{did('image')}/value", json={"select": "[1:3,4:6]"})
    assert posted.content == make_publish()["image"][1:3, 4:6].tobytes()
    flags = tc.get(f"/datasets/{did('flags')}/value").content
    assert flags == bytes([1, 0, 1])


def test_attribute_routes(client: tuple[TestClient, dict[Any, Any]]) -> None:
    tc, _ = client
    names = [a["name"] for a in tc.get(f"/datasets/{did('image')}/attributes").json()["attributes"]]
    assert names == ["listattr", "unit"]
    one = tc.get(f"/datasets/{did('image')}/attributes/listattr").json()
    assert one["value"] == [42, 43, 44, 45] and one["shape"]["dims"] == [4]
    root = tc.get("/groups/g-h5dict-2F/attributes/pair").json()
    assert root["value"] == [[0.5, 1]] and root["type"]["class"] == "H5T_COMPOUND"
    odd = tc.get(f"/datasets/{did('odd')}/attributes").json()["attributes"]
    assert [a["name"] for a in odd] == ["ok"]  # None has no HDF5 type: skipped
    assert tc.get(f"/datasets/{did('badattr')}/attributes").json() == {"attributes": []}


def test_value_copies_never_alias_publish(client: tuple[TestClient, dict[Any, Any]]) -> None:
    from dranspose_fast.api.h5dict import _selected_copy

    data = client[1]
    for name, sel in [("image", None), ("image", [slice(0, 3)]), ("padded", None), ("f32", None)]:
        out = _selected_copy(data[name], sel, name)
        assert isinstance(out, np.ndarray) and out.flags.c_contiguous
        assert not np.shares_memory(out, data[name])


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/groups/x-nothing", 404, "not an h5dict id"),
        ("/groups/g-h5dict-ZZ", 404, "does not encode a path"),
        ("/groups/g-h5dict-61", 404, "not an absolute path"),
        ("/groups/g-other-2F", 404, "not an h5dict id"),
        (f"/groups/{did('image')}", 404, "names a dataset, not a group"),
        (f"/datasets/{gid('oned')}", 404, "names a group, not a dataset"),
        (f"/groups/{gid('missing')}", 404, "no key 'missing' in '/'"),
        (f"/groups/{gid('image')}", 404, "not a group"),
        (f"/groups/{gid('live', 'deeper')}/links", 404, "'/live' is not a group"),
        (f"/datasets/{did('oned')}", 404, "it is a group"),
        (f"/datasets/{did('image_attrs')}", 404, "no key 'image_attrs'"),
        ("/groups/g-h5hash-00000000000000000000000000000", 404, "hashed id"),
        (f"/groups/{gid()}/links/nope", 404, "has no link 'nope'"),
        (f"/datasets/{did('image')}/attributes/nope", 404, "no attribute 'nope'"),
        (f"/datasets/{did('odd')}/attributes/none", 404, "has no HDF5 type"),
        (f"/datasets/{did('nothing')}", 404, "'|O' has no HDF5 type"),
        (f"/datasets/{did('objects')}/value", 404, "'|O' has no HDF5 type"),
        (f"/datasets/{did('complex')}", 404, "'<c16' has no HDF5 type"),
        (f"/datasets/{did('ragged')}", 404, "cannot be converted"),
        (f"/datasets/{did('mixed')}", 404, "mixes str"),
        (f"/datasets/{did('huge')}", 404, "does not fit in 64 bits"),
        (f"/datasets/{did('image')}/value?select=2:5", 400, "must look like"),
        (f"/datasets/{did('image')}/value?select=[a:5]", 400, "'a' is not an integer"),
        (f"/datasets/{did('image')}/value?select=[1::2]", 400, "dimension 0 part ''"),
        (f"/datasets/{did('image')}/value?select=[0:1,[1,2]]", 400, "not an integer"),
        (f"/datasets/{did('image')}/value?select=[1:2:3:4]", 400, "more than 3 parts"),
        (f"/datasets/{did('image')}/value?select=[0:4:0]", 400, "step 0"),
        (f"/datasets/{did('image')}/value?select=[0:1,0:1,0:1]", 400, "3 dimensions but"),
        (f"/datasets/{did('live')}/value?select=[0:1]", 400, "select on scalar"),
        (f"/datasets/{did('scalar32')}/value?select=[0:1]", 400, "has 0"),
    ],
)
def test_error_paths(
    client: tuple[TestClient, dict[Any, Any]], path: str, status: int, detail: str
) -> None:
    rsp = client[0].get(path)
    assert rsp.status_code == status, rsp.text
    assert detail in rsp.json()["detail"]


def test_publish_not_a_dict_and_bad_post() -> None:
    with TestClient(create_app(lambda: ([1, 2], nullcontext()))) as tc:
        rsp = tc.get("/")
        assert rsp.status_code == 404 and "not a dict" in rsp.json()["detail"]
    with TestClient(create_app(lambda: ({"a": np.ones(3)}, nullcontext()))) as tc:
        rsp = tc.post(f"/datasets/{did('a')}/value", json={"select": 5})
        assert rsp.status_code == 400 and "select must be a string" in rsp.json()["detail"]


def test_lock_timeout_answers_503() -> None:
    lock = threading.Lock()
    with TestClient(create_app(lambda: ({"a": 1}, lock), lock_timeout=0.05)) as tc:
        with lock:
            rsp = tc.get(f"/datasets/{did('a')}/value")
        assert rsp.status_code == 503 and "locked" in rsp.json()["detail"]
        assert rsp.headers["retry-after"] == "1"
        assert tc.get(f"/datasets/{did('a')}/value").json() == {"value": 1}


_names = st.text(st.characters(exclude_characters="/", exclude_categories=("Cs",)), min_size=1)


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(_names, max_size=4), hsds=st.booleans(), group=st.booleans())
def test_id_roundtrip(parts: list[str], hsds: bool, group: bool) -> None:
    coll = "groups" if group else "datasets"
    obj_id = make_id(coll, tuple(parts), hsds)
    ref = parse_id(obj_id, coll)
    assert ref.parts == tuple(parts) or (ref.parts is None and hsds)
    if hsds:
        assert isValidUuid(obj_id)
    else:
        assert obj_id[2:] == "h5dict-" + ("/" + "/".join(parts)).encode().hex().upper()


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    data=st.data(),
)
def test_select_matches_numpy(
    client: tuple[TestClient, dict[Any, Any]], shape: list[int], data: st.DataObject
) -> None:
    arr = np.arange(int(np.prod(shape)), dtype=">i4").reshape(shape)
    client[1]["hyp"] = arr
    slices = []
    for n in shape[: data.draw(st.integers(1, len(shape)))]:
        start = data.draw(st.integers(0, n))
        stop = data.draw(st.integers(start, n + 2))
        step = data.draw(st.integers(1, 3))
        slices.append(slice(start, stop, step))
    select = "[" + ",".join(f"{s.start}:{s.stop}:{s.step}" for s in slices) + "]"
    rsp = client[0].get(f"/datasets/{did('hyp')}/value", params={"select": select})
    assert rsp.status_code == 200
    assert rsp.content == arr[tuple(slices)].tobytes()  # httpx has undone any gzip
