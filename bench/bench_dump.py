"""Reading and writing dump files: dranspose_fast.dump against the 0.2 way, in the same run.

Run: ``python -m pytest bench/bench_dump.py -q --benchmark-only -p no:cacheprovider``.

Baselines: ``cbor2.load`` in a loop with a tag hook that builds validated pydantic models (what
dranspose 0.2's ``get_internals`` does), and a raw ``f.read()`` of the whole file (the page cache
copy floor).  Files are written once per module and stay in the page cache.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cbor2 import CBORTag

from dranspose_fast.dump import DumpWriter, read_dump, write_dump
from dranspose_fast.event import InternalWorkerMessage, StreamData, message_encoder

N_SMALL, SMALL = 20_000, 8 << 10  # 160 MiB of 8 KiB frames
N_BIG, BIG = 256, 1 << 20  # 256 MiB of 1 MiB frames
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def _messages(n: int, size: int) -> list[InternalWorkerMessage]:
    header = b'{"htype": "image", "shape": [64, 64], "type": "uint16"}'
    payload = bytes(range(256)) * (size // 256)
    return [
        InternalWorkerMessage(
            event_number=i,
            streams={"eiger": StreamData(typ="STINS", frames=[header, payload])},
            created_at=T0,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    d = tmp_path_factory.mktemp("dumps")
    out = {"small": d / "small.cbors", "big": d / "big.cbors", "small_gz": d / "small.cbors.gz"}
    write_dump(out["small"], _messages(N_SMALL, SMALL))
    write_dump(out["big"], _messages(N_BIG, BIG))
    out["small_gz"].write_bytes(gzip.compress(out["small"].read_bytes(), compresslevel=1))
    yield out


def _tag_hook_02(*args: Any) -> Any:
    """dranspose 0.2's decoder hook: validated pydantic models (either cbor2 hook signature)."""
    tag = args[0] if isinstance(args[0], CBORTag) else args[1]
    if tag.tag == 42877:
        return InternalWorkerMessage(
            event_number=tag.value[0], streams=dict(tag.value[1]), created_at=tag.value[2]
        )
    if tag.tag == 42878:
        return StreamData(typ=tag.value[0], frames=list(tag.value[1]))
    return tag


def _read_fast(path: Path) -> int:
    n = 0
    for _ in read_dump(path):
        n += 1
    return n


class _Unseekable(io.RawIOBase):
    """cbor2 6 reads ahead and seeks back on seekable files; on a GzipFile every seek back
    re-decompresses from the start.  Hiding seek() gives the baseline its fair speed."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return int(self.fh.readinto(b))


def _read_cbor2(path: Path) -> int:
    n = 0
    opener: Any = open
    if path.suffix == ".gz":
        opener = lambda p, m: io.BufferedReader(_Unseekable(gzip.open(p, m)))  # noqa: E731
    with opener(path, "rb") as fh:
        while True:
            try:
                cbor2.load(fh, tag_hook=_tag_hook_02)
            except (EOFError, cbor2.CBORDecodeEOF):  # cbor2 6: no longer an EOFError
                return n
            n += 1


def _read_raw(path: Path) -> int:
    with open(path, "rb") as fh:
        return len(fh.read())


def _readinto_raw(path: Path) -> int:
    """The copy floor: the file through one reused 1 MiB buffer (no fresh pages)."""
    buf = bytearray(1 << 20)
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while got := fh.readinto(buf):
            total += got
    return total


_READERS = {
    "dranspose_fast": _read_fast,
    "cbor2_0.2_hook": _read_cbor2,
    "raw_read": _read_raw,
    "raw_readinto_1MiB": _readinto_raw,
}


def _rate(benchmark: Any, nbytes: int, records: int) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info["records_per_s"] = round(records / median)
    benchmark.extra_info["GB_per_s"] = round(nbytes / median / 1e9, 2)


@pytest.mark.benchmark(group="read-8KiB-frames")
@pytest.mark.parametrize("how", list(_READERS))
def test_read_small(benchmark: Any, files: dict[str, Path], how: str) -> None:
    fn = _READERS[how]
    result = benchmark.pedantic(fn, args=(files["small"],), rounds=3, iterations=1)
    assert result in (N_SMALL, files["small"].stat().st_size)
    _rate(benchmark, files["small"].stat().st_size, N_SMALL)


@pytest.mark.benchmark(group="read-1MiB-frames")
@pytest.mark.parametrize("how", list(_READERS))
def test_read_big(benchmark: Any, files: dict[str, Path], how: str) -> None:
    fn = _READERS[how]
    result = benchmark.pedantic(fn, args=(files["big"],), rounds=3, iterations=1)
    assert result in (N_BIG, files["big"].stat().st_size)
    _rate(benchmark, files["big"].stat().st_size, N_BIG)


@pytest.mark.benchmark(group="read-8KiB-frames-gz")
@pytest.mark.parametrize("how", ["dranspose_fast", "cbor2_0.2_hook"])
def test_read_small_gz(benchmark: Any, files: dict[str, Path], how: str) -> None:
    fn = _read_fast if how == "dranspose_fast" else _read_cbor2
    assert benchmark.pedantic(fn, args=(files["small_gz"],), rounds=3, iterations=1) == N_SMALL
    _rate(benchmark, files["small"].stat().st_size, N_SMALL)


@pytest.mark.benchmark(group="write-8KiB-frames")
@pytest.mark.parametrize("how", ["dranspose_fast", "cbor2_0.2_dumper"])
def test_write_small(benchmark: Any, tmp_path: Path, how: str) -> None:
    msgs = _messages(5_000, SMALL)
    path = tmp_path / "w.cbors"

    def fast() -> None:
        with DumpWriter(path) as w:
            for m in msgs:
                w.write(m)

    def dumper02() -> None:
        with open(path, "ab") as fh:
            for m in msgs:
                cbor2.dump(CBORTag(55799, m), fh, default=message_encoder)

    def run() -> None:
        path.unlink(missing_ok=True)
        (fast if how == "dranspose_fast" else dumper02)()

    benchmark.pedantic(run, rounds=3, iterations=1)
    _rate(benchmark, path.stat().st_size, len(msgs))
