"""Dump files against the real dranspose 0.2, both directions, run in its own venv.

Set ``DRANSPOSE02_PYTHON`` to the python of a venv holding dranspose 0.2.0 and cbor2 < 6
(``export DRANSPOSE02_PYTHON=$(tests/compat/setup_dr02_venv.sh)``); without it these tests are
skipped (under ``CI=true`` the venv is built, or they fail).  The committed fixtures in
tests/data/ (read by test_dump.py) cover the same ground without the venv.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dranspose_fast.dump import read_dump, write_dump
from dranspose_fast.event import InternalWorkerMessage, StreamData
from tests.compat.dr02 import dr02_python, run_dr02_raw
from tests.compat.dr02_roundtrip import frame_bytes, spec_summary, summary

SCRIPT = Path(__file__).parent / "compat" / "dr02_roundtrip.py"


@pytest.fixture(scope="module")
def dr02() -> str:
    return dr02_python()


def run02(*args: str, spec: Any = None) -> str:
    return run_dr02_raw(SCRIPT, *args, stdin=None if spec is None else json.dumps(spec)).decode()


def messages(spec: list[dict[str, Any]]) -> list[InternalWorkerMessage]:
    """Our messages for a spec (legacy records get no created_at of their own: now)."""
    out = []
    for rec in spec:
        kwargs: dict[str, Any] = {
            "event_number": rec["event_number"],
            "streams": {
                n: StreamData(typ=s["typ"], frames=[frame_bytes(f) for f in s["frames"]])
                for n, s in rec["streams"].items()
            },
        }
        if rec.get("created_at"):
            kwargs["created_at"] = datetime.fromisoformat(rec["created_at"])
        out.append(InternalWorkerMessage(**kwargs))
    return out


def same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Summaries equal; a spec without created_at accepts any aware timestamp."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        at = datetime.fromisoformat(g.pop("created_at"))
        assert at.tzinfo is not None
        if w.get("created_at") is not None:
            assert at == datetime.fromisoformat(w["created_at"])
        assert g == {k: v for k, v in w.items() if k != "created_at"}


SPEC: list[dict[str, Any]] = [
    {
        "event_number": 0,
        "created_at": "2024-05-01T12:00:00.250000+00:00",
        "streams": {
            "eiger": {"typ": "STINS", "frames": [{"hex": "7b7d"}, {"len": 65536, "seed": 1}]},
            "pcap": {"typ": "PCAP", "frames": [{"len": 23, "seed": 2}, {"len": 24, "seed": 3}]},
        },
    },
    {"event_number": 1, "legacy": True, "streams": {"xrd": {"typ": "STINS", "frames": []}}},
    {"event_number": 255, "created_at": "2024-05-01T12:00:01+00:00", "streams": {}},
    {
        "event_number": 65536,
        "created_at": "2024-05-01T14:00:01.000001+02:00",
        "streams": {
            f"s{i}": {"typ": "x" * i, "frames": [{"len": 255 + i, "seed": i}]} for i in range(25)
        },
    },
    {
        "event_number": 2**32,
        "created_at": "2024-05-01T12:00:02.5-05:30",
        "streams": {"ångström": {"typ": "lecroy", "frames": [{"len": 200_000, "seed": 9}]}},
    },
]


@pytest.mark.parametrize("suffix", [".cbors", ".cbors.gz", ".pkls"])
def test_we_read_what_dr02_writes(dr02: str, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"dr02{suffix}"
    spec = SPEC if suffix != ".pkls" else [r for r in SPEC if not r.get("legacy")]
    run02("write", str(path), "-", spec=spec)
    same(summary(read_dump(path)), spec_summary(spec))


@pytest.mark.parametrize("suffix", [".cbors", ".cbors.gz"])
def test_dr02_reads_what_we_write(dr02: str, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"ours{suffix}"
    write_dump(path, messages(SPEC))
    same(json.loads(run02("read", str(path))), spec_summary(SPEC, big="bytes"))


def test_our_bytes_are_dr02_bytes(dr02: str, tmp_path: Path) -> None:
    spec = [r for r in SPEC if not r.get("legacy")]  # we always write created_at
    theirs, ours = tmp_path / "theirs.cbors", tmp_path / "ours.cbors"
    run02("write", str(theirs), "-", spec=spec)
    write_dump(ours, messages(spec))
    assert ours.read_bytes() == theirs.read_bytes()
    # and what we read from their file re-encodes to the same bytes
    again = tmp_path / "again.cbors"
    write_dump(again, read_dump(theirs))
    assert again.read_bytes() == theirs.read_bytes()


def test_dr02_reads_the_gz_we_append(dr02: str, tmp_path: Path) -> None:
    path = tmp_path / "multi.cbors.gz"
    write_dump(path, messages(SPEC[:2]))
    write_dump(path, messages(SPEC[2:]))  # a second gzip member, as appending writers make
    assert gzip.decompress(path.read_bytes())  # multi-member gzip is still one stream
    same(json.loads(run02("read", str(path))), spec_summary(SPEC, big="bytes"))


def test_venv_is_not_this_interpreter(dr02: str) -> None:
    # the comparisons above only mean something if 0.2 runs apart from our package
    out = subprocess.run(
        [
            dr02,
            "-c",
            "import importlib.util as u, sys;"
            "print(u.find_spec('dranspose_fast') is None, sys.prefix)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    absent, prefix = out.stdout.split()
    assert absent == "True" and prefix != sys.prefix
