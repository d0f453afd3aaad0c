"""helpers.h5dump.dump: publish-style dicts written to HDF5 and read back with h5py."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from dranspose_fast.helpers.h5dump import dump

PAIR = np.dtype({"names": ["a", "b"], "formats": ["<f8", ">u8"]})


def publish() -> dict[Any, Any]:
    return {
        "live": 34,
        "ratio": 0.25,
        "hello": "World",
        "image": np.arange(12, dtype=">u2").reshape(3, 4),
        "image_attrs": {"unit": "counts", "ids": [42, 43], "axes": ["y", "x"]},
        "a": {"b": {"c": {"d": np.linspace(0, 1, 5, dtype=np.float32)}}},
        "a_attrs": {"NX_class": "NXentry"},
        "names": ["alpha", "beta"],
        "labels": np.array(["x", "yy"]),
        "table": np.array([(0.5, 7)], dtype=PAIR),
        "_attrs": {"NX_class": "NXroot", "version": 2},
    }


def test_values_groups_and_attributes_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    dump(publish(), out)
    with h5py.File(out, "r") as f:
        assert f["live"][()] == 34 and f["ratio"][()] == 0.25
        assert f["hello"].asstr()[()] == "World"
        assert f["image"].dtype == np.dtype(">u2")
        np.testing.assert_array_equal(f["image"][()], np.arange(12).reshape(3, 4))
        np.testing.assert_array_equal(f["a/b/c/d"][()], np.linspace(0, 1, 5, dtype=np.float32))
        assert isinstance(f["a/b"], h5py.Group)
        assert f["image"].attrs["unit"] == "counts"
        assert f["image"].attrs["ids"].tolist() == [42, 43]
        assert list(f["image"].attrs["axes"]) == ["y", "x"]
        assert f["a"].attrs["NX_class"] == "NXentry"
        assert f.attrs["NX_class"] == "NXroot" and f.attrs["version"] == 2
        assert f["names"].asstr()[()].tolist() == ["alpha", "beta"]
        assert f["labels"].asstr()[()].tolist() == ["x", "yy"]
        assert f["table"].dtype == PAIR and f["table"][0].tolist() == (0.5, 7)
        assert "image_attrs" not in f and "_attrs" not in f


def test_extra_root_attrs_override(tmp_path: Path) -> None:
    out = tmp_path / "attrs.h5"
    extra = {"version": 3, "parameter_roi": b"\x00\x01", "parameter_js": b'{"a": 1}', "tag": "r7"}
    dump(publish(), str(out), attrs=extra)
    with h5py.File(out, "r") as f:
        assert f.attrs["version"] == 3  # the argument wins over publish["_attrs"]
        assert f.attrs["NX_class"] == "NXroot"
        assert f.attrs["tag"] == "r7"
        assert bytes(f.attrs["parameter_roi"]) == b"\x00\x01"  # NUL bytes: stored opaque
        assert f.attrs["parameter_js"] == '{"a": 1}'  # text bytes stay readable


def test_unwritable_values_are_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data: dict[Any, Any] = {
        "good": np.ones(3),
        "nothing": None,
        "objects": [object(), 1],
        7: "non-string key",
        "a/b": 1,
        "grp": {"inner_bad": {1, 2}, "fine": 1.5},
        "good_attrs": {"ok": 1, "bad": None, 3: "x"},
        "ghost_attrs": {"x": 1},
        "grp_attrs": "not a dict",
        "_attrs": {"root_ok": "yes", "root_bad": object()},
    }
    out = tmp_path / "bad.h5"
    with caplog.at_level(logging.WARNING, logger="dranspose_fast.helpers.h5dump"):
        dump(data, out)
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["good", "grp"]
        assert list(f["grp"].keys()) == ["fine"]
        assert dict(f["good"].attrs) == {"ok": 1}
        assert dict(f.attrs) == {"root_ok": "yes"}
    text = caplog.text
    for fragment in [
        "/nothing skipped",
        "/objects skipped",
        "key 7 in /",
        "key 'a/b' in /",
        "/grp/inner_bad skipped",
        "attribute 'bad' of /good",
        "attribute name 3 of /good",
        "/ghost_attrs has no object 'ghost'",
        "attributes of /grp are a str",
        "attribute 'root_bad' of /",
    ]:
        assert fragment in text, fragment
    assert str(out) in text


class RecordingLock:
    """A real lock that also records whether it was held while h5py wrote."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entered = 0

    def __enter__(self) -> None:
        self.lock.acquire()
        self.entered += 1

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


class Probe:
    """A value whose conversion to an array checks that the lock is held."""

    def __init__(self, lock: RecordingLock) -> None:
        self.lock = lock
        self.seen_locked: bool | None = None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        self.seen_locked = self.lock.lock.locked()
        return np.arange(3)


def test_lock_is_held_while_writing(tmp_path: Path) -> None:
    lock = RecordingLock()
    probe = Probe(lock)
    dump({"p": probe}, tmp_path / "lock.h5", lock=lock)
    assert lock.entered == 1 and probe.seen_locked is True
    assert not lock.lock.locked()
    with h5py.File(tmp_path / "lock.h5", "r") as f:
        assert f["p"][()].tolist() == [0, 1, 2]


def test_empty_dict_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "twice.h5"
    dump({"old": 1}, out)
    dump({"empty": {}}, out)
    with h5py.File(out, "r") as f:
        assert list(f.keys()) == ["empty"] and len(f["empty"]) == 0
