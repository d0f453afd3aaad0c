"""Ingester dumps (``DUMP_PATH`` / the ``dump_prefix`` parameter) read back with ``read_dump``.

A dump holds one record per event the ingester handled, with all of its streams for that event,
discarded ones included, exactly as received upstream, so that a replay reproduces the scan.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dranspose_fast.dump import read_dump
from dranspose_fast.event import InternalWorkerMessage, StreamData
from dranspose_fast.ingester import Ingester, IsSoftwareTriggered
from dranspose_fast.ingesters import ZmqPullSingleIngester
from dranspose_fast.protocol import StreamName
from dranspose_fast.runtime.redis_messages import Keys
from tests.ingester_harness import Harness, as_bytes, harness, wait_for  # noqa: F401


def frames_of(msg: InternalWorkerMessage, stream: str) -> list[bytes]:
    return [as_bytes(f) for f in msg.streams[StreamName(stream)].frames]


def finish_and_read(h: Harness, ing: Ingester, uid: uuid.UUID, path: Path,
                    n: int) -> list[InternalWorkerMessage]:
    """End the scan (closes the dump) and read the ``n`` records back."""
    h.update(ing.streams, uid=uid, finished=True)
    wait_for(lambda: ing._scan is not None and ing._scan.finished and ing._scan.dumper is None,
             what="dump closed")
    records = list(read_dump(path))
    assert len(records) == n, [r.event_number for r in records]
    return records


def test_dump_path_records_every_handled_event(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "eiger.cbors"
    src = harness.stins(shape=(150, 300), record=True)  # 88 KiB images: large-frame path
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url,
                           dump_path=str(path))
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    before = datetime.now(UTC)
    # header, img0, (no frame), img1 discarded, img2, end
    harness.assign(uid, 0, [[1], [1], [None], [0], [1], [1]], ["w0"])
    src.send_series(3)
    w0.receive(4)
    records = finish_and_read(harness, ing, uid, path, 5)
    after = datetime.now(UTC)
    assert [r.event_number for r in records] == [0, 1, 3, 4, 5]
    # Exactly the upstream messages, in order, the discarded image included.
    assert [frames_of(r, "eiger") for r in records] == src.messages
    for r in records:
        assert list(r.streams) == ["eiger"]
        assert r.streams[StreamName("eiger")].typ == "STINS"
        assert r.created_at.tzinfo is not None
        assert before <= r.created_at <= after
    assert ing.counter_values().dumped == 5


def test_dump_path_appends_across_scans(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "both.cbors"
    src = harness.stins(record=True)
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url,
                           dump_path=str(path))
    w0 = harness.worker("w0", ing)
    for scan in range(2):
        uid = harness.start_scan(["eiger"], ing)
        harness.assign(uid, 0, [[1]] * 3, ["w0"])
        src.send_series(1)
        w0.receive(3 * (scan + 1))
        records = finish_and_read(harness, ing, uid, path, 3 * (scan + 1))
    assert [r.event_number for r in records] == [0, 1, 2, 0, 1, 2]
    assert [frames_of(r, "eiger") for r in records] == src.messages


def test_dump_prefix_parameter(harness: Harness, tmp_path: Path) -> None:
    src = harness.stins(record=True)
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    prefix = f"{tmp_path}/run7-"
    version = uuid.uuid4()
    harness.redis.set(Keys.parameter("dump_prefix", str(version)), prefix.encode())
    uid = harness.start_scan(["eiger"], ing, parameters_version={"dump_prefix": version})
    harness.assign(uid, 0, [[1]] * 4, ["w0"])
    src.send_series(2)
    w0.receive(4)
    path = Path(f"{prefix}eiger-ingester-{uid}.cbors")
    records = finish_and_read(harness, ing, uid, path, 4)
    assert [frames_of(r, "eiger") for r in records] == src.messages
    # An empty prefix turns dumping off for the next scan.
    empty = uuid.uuid4()
    harness.redis.set(Keys.parameter("dump_prefix", str(empty)), b"")
    uid2 = harness.start_scan(["eiger"], ing, parameters_version={"dump_prefix": empty})
    harness.assign(uid2, 0, [[1]] * 3, ["w0"])
    src.send_series(1)
    w0.receive(7)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_dump_prefix_outside_the_root_is_refused_and_the_scan_goes_on(
        harness: Harness, tmp_path: Path) -> None:
    """Redis is not trusted with paths: a prefix the controller would refuse (written to Redis
    by someone else) is refused by the ingester too, counted, and the events still flow."""
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    src = harness.stins(record=True)
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url,
                           dfast_dump_root=root)
    w0 = harness.worker("w0", ing)
    version = uuid.uuid4()
    harness.redis.set(Keys.parameter("dump_prefix", str(version)), f"{root}/../elsewhere/x-")
    uid = harness.start_scan(["eiger"], ing, parameters_version={"dump_prefix": version})
    harness.assign(uid, 0, [[1]] * 3, ["w0"])
    src.send_series(1)
    assert len(w0.receive(3)) == 3
    wait_for(lambda: ing.counter_values().dump_errors == 1, what="the refusal counted")
    assert list(outside.iterdir()) == []


def test_multi_stream_dump_has_discarded_streams_and_only_present_ones(
    harness: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "ab.cbors"
    a, b = harness.stins(record=True), harness.stins(shape=(3,), record=True)
    ing = harness.ingester(ZmqPullSingleIngester, ["a", "b"], dump_path=str(path),
                           upstream_urls={"a": a.url, "b": b.url})
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["b", "a"], ing)  # map order differs from ingester order
    cells: list[list[int | None]] = [[1, 1], [0, 1], [1, None], [None, 0], [1, 1]]
    harness.assign(uid, 0, cells, ["w0"])
    a.send_series(2)
    b.send_series(2)
    w0.receive(4)  # event 3 goes to nobody
    records = finish_and_read(harness, ing, uid, path, 5)
    assert [sorted(r.streams) for r in records] == [
        ["a", "b"], ["a", "b"], ["b"], ["a"], ["a", "b"]]
    assert [frames_of(r, "a") for r in records if "a" in r.streams] == a.messages
    assert [frames_of(r, "b") for r in records if "b" in r.streams] == b.messages


class SoftIngester(Ingester):
    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        while True:
            yield IsSoftwareTriggered()

    def software_trigger(self) -> Iterator[dict[str, StreamData]]:
        for k in range(100):
            yield {"temp": StreamData(typ="json", frames=[b'{"t": %d}' % k])}


def test_dump_of_software_triggered_stream_holds_the_triggered_values(
    harness: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "soft.cbors"
    ing = harness.ingester(SoftIngester, ["temp"], dump_path=str(path))
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["temp"], ing)
    harness.assign(uid, 0, [[1], [0], [1]], ["w0"])
    w0.receive(2)
    records = finish_and_read(harness, ing, uid, path, 3)
    assert [frames_of(r, "temp") for r in records] == [[b'{"t": 0}'], [b'{"t": 1}'],
                                                       [b'{"t": 2}']]


@pytest.mark.parametrize("where", ["missing-dir/x.cbors", "."])
def test_unwritable_dump_is_counted_and_the_scan_goes_on(
    harness: Harness, tmp_path: Path, where: str
) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url,
                           dump_path=str(tmp_path / where))
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger"], ing)
    harness.assign(uid, 0, [[1]] * 3, ["w0"])
    src.send_series(1)
    assert [e for e, _ in w0.receive(3)] == [0, 1, 2]
    assert ing.counter_values().dump_errors == 1
