"""Dump files: reading real dranspose 0.2 output, round trips, encodings, zero-copy, errors."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
import zmq
from cbor2 import CBORTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dranspose_fast import _cborscan, dump
from dranspose_fast.dump import (
    DumpWriter,
    encode_record,
    get_internals,
    read_dump,
    write_dump,
)
from dranspose_fast.errors import DumpError
from dranspose_fast.event import (
    InternalWorkerMessage,
    StreamData,
    make_internal,
    make_stream_data,
    message_encoder,
)
from tests.compat.dr02_roundtrip import spec_summary, summary

DATA = Path(__file__).parent / "data"
FIXTURES: dict[str, list[dict[str, Any]]] = json.loads(
    (Path(__file__).parent / "compat" / "fixtures.json").read_text()
)
T0 = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)


def msg(
    evn: int, streams: dict[str, tuple[str, list[Any]]], at: datetime = T0
) -> InternalWorkerMessage:
    return InternalWorkerMessage(
        event_number=evn,
        streams={k: StreamData(typ=t, frames=f) for k, (t, f) in streams.items()},
        created_at=at,
    )


def oracle(m: InternalWorkerMessage) -> bytes:
    """What dranspose 0.2's Dumper writes: cbor2 with the encoder hook."""
    return bytes(cbor2.dumps(CBORTag(55799, m), default=message_encoder))


def content(msgs: Any) -> list[dict[str, Any]]:
    """summary() without the frame types (bytes vs zmq.Frame)."""
    out = summary(msgs)
    for rec in out:
        for stream in rec["streams"].values():
            for frame in stream["frames"]:
                del frame["type"]
    return out


def raw(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)


# === Fixtures written by real dranspose 0.2 ===


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_reads_dranspose02_fixtures(name: str) -> None:
    before = datetime.now(UTC)
    got = summary(read_dump(DATA / name))
    want = spec_summary(FIXTURES[name])
    for g, w in zip(got, want, strict=True):
        if w["created_at"] is None:  # 2-element legacy record: created_at is "now"
            assert before <= datetime.fromisoformat(g["created_at"]) <= datetime.now(UTC)
            g["created_at"] = None
        else:
            assert datetime.fromisoformat(g["created_at"]) == datetime.fromisoformat(
                w["created_at"]
            )
            g["created_at"] = w["created_at"]
    assert got == want


def test_legacy_fixture_has_the_reference_layout() -> None:
    data = (DATA / "dr02_legacy.cbors").read_bytes()
    assert data.startswith(bytes.fromhex("d9d9f7 d9a77d 82 00 a1 63") + b"xrd")
    msgs = list(get_internals(DATA / "dr02_legacy.cbors"))
    assert [m.event_number for m in msgs] == [0, 1, 2]
    assert all(m.created_at.tzinfo is not None for m in msgs)


@pytest.mark.parametrize("name", ["dr02_small.cbors", "dr02_big.cbors.gz"])
def test_writer_reproduces_dranspose02_bytes(name: str, tmp_path: Path) -> None:
    path = DATA / name
    original = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    assert b"".join(encode_record(m) for m in read_dump(path)) == original
    out = tmp_path / "copy.cbors"
    assert write_dump(out, read_dump(path)) == len(FIXTURES[name])
    assert out.read_bytes() == original


def test_pkls_fixture_loads_into_our_classes() -> None:
    msgs = list(read_dump(DATA / "dr02_small.pkls"))
    assert all(type(m) is InternalWorkerMessage for m in msgs)
    assert all(type(s) is StreamData for m in msgs for s in m.streams.values())
    assert summary(msgs) == summary(read_dump(DATA / "dr02_small.cbors"))


def test_pkls_refuses_foreign_classes(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkls"
    path.write_bytes(pickle.dumps(msg(0, {})) + pickle.dumps(Path("/etc/passwd")))
    reader = read_dump(path)
    assert next(reader).event_number == 0
    with pytest.raises(DumpError, match=r"evil.pkls: bad pickle at byte offset \d+: .*not allowed"):
        next(reader)


def test_pkls_truncated_and_wrong_type(tmp_path: Path) -> None:
    one = pickle.dumps(msg(3, {"a": ("x", [b"1"])}))
    path = tmp_path / "t.pkls"
    path.write_bytes(one + one[:-5])
    with pytest.raises(DumpError, match=f"t.pkls: .* at byte offset {len(one)}"):
        list(read_dump(path))
    path.write_bytes(one + pickle.dumps({"event_number": 1}))
    with pytest.raises(DumpError, match=f"byte offset {len(one)} is a dict"):
        list(read_dump(path))


def test_pkls_suffix_with_cbor_content_is_read_as_cbor(tmp_path: Path) -> None:
    # 0.2's helm chart named CBOR dumps *.pkls; 0.2 itself then failed to read them.
    path = tmp_path / "ingester.pkls"
    path.write_bytes((DATA / "dr02_small.cbors").read_bytes())
    assert summary(read_dump(path)) == summary(read_dump(DATA / "dr02_small.cbors"))


# === Round trips and byte identity with cbor2 ===

_TZ = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))]
)
_FRAME = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([23, 24, 255, 256, 65535, 65536, 70000]).map(lambda n: bytes([n % 251]) * n),
)
_STREAM = st.tuples(st.text(max_size=10), st.lists(_FRAME, max_size=4))
_MSG = st.builds(
    msg,
    st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1)),
    st.dictionaries(st.text(max_size=12), _STREAM, max_size=4),
    st.datetimes(timezones=_TZ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_MSG, max_size=5))
def test_round_trip_matches_cbor2_and_reads_back(tmp_path_factory: Any, msgs: list[Any]) -> None:
    path = tmp_path_factory.mktemp("rt") / "d.cbors"
    write_dump(path, msgs)
    assert path.read_bytes() == b"".join(oracle(m) for m in msgs)
    got = list(read_dump(path))
    assert [m.event_number for m in got] == [m.event_number for m in msgs]
    assert [m.created_at.isoformat() for m in got] == [m.created_at.isoformat() for m in msgs]
    for g, m in zip(got, msgs, strict=True):
        assert list(g.streams) == list(m.streams)
        for name, s in m.streams.items():
            assert g.streams[name].typ == s.typ
            assert [raw(f) for f in g.streams[name].frames] == s.frames
            assert [isinstance(f, zmq.Frame) for f in g.streams[name].frames] == [
                len(f) >= 65536 for f in s.frames
            ]


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1])
def test_event_number_encodings(n: int, tmp_path: Path) -> None:
    m = msg(n, {"s": ("t", [b"x"])})
    assert encode_record(m) == oracle(m)
    write_dump(tmp_path / "e.cbors", [m])
    assert [r.event_number for r in read_dump(tmp_path / "e.cbors")] == [n]


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536, 65537])
def test_frame_length_encodings(size: int, tmp_path: Path) -> None:
    frame = bytes(range(256)) * (size // 256) + bytes(size % 256)
    m = msg(7, {"s": ("STINS", [frame, b"tail"])})
    data = encode_record(m)
    assert data == oracle(m)
    (tmp_path / "f.cbors").write_bytes(data * 2)
    got = list(read_dump(tmp_path / "f.cbors"))
    assert [[raw(f) for f in r.streams["s"].frames] for r in got] == [[frame, b"tail"]] * 2


@pytest.mark.parametrize("count", [23, 24, 300])
def test_many_streams_and_frames(count: int, tmp_path: Path) -> None:
    m = msg(1, {f"s{i}": ("t" * count, [bytes([i % 256])] * count) for i in range(count)})
    assert encode_record(m) == oracle(m)
    write_dump(tmp_path / "m.cbors", [m])
    (got,) = read_dump(tmp_path / "m.cbors")
    assert list(got.streams) == list(m.streams)
    assert all(len(s.frames) == count for s in got.streams.values())


def test_writer_takes_any_buffer_and_normalises_datetimes(tmp_path: Path) -> None:
    payload = bytes(range(200)) * 400  # 80 kB
    frames: list[Any] = [
        zmq.Frame(payload),
        memoryview(payload),
        bytearray(b"abc"),
        np.arange(10, dtype=np.uint16),
        np.arange(20, dtype=np.uint8)[::2],  # not contiguous
    ]
    m = make_internal(5, {"s": make_stream_data("t", frames)}, T0)  # not validated
    plain = msg(5, {"s": ("t", [payload, payload, b"abc", np.arange(10, dtype=np.uint16).tobytes(),
                                bytes(range(0, 20, 2))])})  # fmt: skip
    assert encode_record(m) == oracle(plain)
    naive = msg(5, {}, datetime(2024, 1, 2, 3, 4, 5))
    assert encode_record(naive) == oracle(msg(5, {}, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)))
    with pytest.raises(DumpError, match="stream 'x': frame of type int"):
        encode_record(make_internal(1, {"x": make_stream_data("t", [3])}))


def test_dumpwriter_appends_plain_and_gz(tmp_path: Path) -> None:
    for name in ["a.cbors", "a.cbors.gz"]:
        path = tmp_path / name
        with DumpWriter(path) as w:
            w.write(msg(0, {"s": ("t", [b"0"])}))
        with DumpWriter(path) as w:  # 0.2 opens dumps in append mode
            w.write(msg(1, {"s": ("t", [b"1"])}))
            w.flush()
        assert [m.event_number for m in read_dump(path)] == [0, 1]


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_dump(tmp_path / "nope.cbors")  # at the call, not at the first next()
    (tmp_path / "empty.cbors").write_bytes(b"")
    assert list(read_dump(tmp_path / "empty.cbors")) == []
    with gzip.open(tmp_path / "empty.cbors.gz", "wb"):
        pass
    assert list(read_dump(tmp_path / "empty.cbors.gz")) == []


# === Zero copy ===


def _address(frame: zmq.Frame) -> int:
    return int(np.frombuffer(frame.buffer, np.uint8).ctypes.data)


def test_big_frames_are_views_of_the_mapped_file(tmp_path: Path) -> None:
    a, b = b"A" * 100_000, b"B" * 200_000
    path = tmp_path / "big.cbors"
    write_dump(path, [msg(0, {"s": ("t", [a, b"small"])}), msg(1, {"s": ("t", [b])})])
    data = path.read_bytes()
    (m0, m1) = read_dump(path)
    fa, small, fb = m0.streams["s"].frames + m1.streams["s"].frames[:1]
    assert isinstance(fa, zmq.Frame) and isinstance(fb, zmq.Frame) and type(small) is bytes
    # Both frames sit at their file offsets inside one mapping: no copy was made.
    assert _address(fb) - _address(fa) == data.index(b) - data.index(a)
    view = np.frombuffer(fb.buffer, np.uint8)
    assert np.shares_memory(view, np.frombuffer(m1.streams["s"].frames[0].buffer, np.uint8))
    # The mapping is copy-on-write: user code may write into frames, the file stays intact.
    if not view.flags.writeable:
        view = view.copy()
    view[:3] = 0
    assert path.read_bytes() == data


# === gz streaming ===


@pytest.mark.parametrize("chunk", [64, 1000, 70_000, 1 << 20])
def test_gz_streams_over_chunk_boundaries(
    chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(chunk)
    msgs = [
        msg(i, {"a": ("STINS", [rng.bytes(int(n)) for n in rng.integers(0, 3000, 3)]),
                "b": ("big", [rng.bytes(70_000)] if i % 4 == 0 else [])})
        for i in range(12)
    ]  # fmt: skip
    path = tmp_path / "d.cbors.gz"
    write_dump(path, msgs)
    monkeypatch.setattr(dump, "_GZ_CHUNK", chunk)
    got = list(read_dump(path))
    assert content(got) == content(msgs) and len(got) == 12
    assert all(isinstance(f, zmq.Frame) for m in got for f in m.streams["b"].frames)


def test_gz_truncated_reports_decompressed_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [oracle(msg(i, {"s": ("t", [bytes(500 + i)])})) for i in range(6)]
    cut = sum(len(r) for r in records[:4]) + 100
    path = tmp_path / "t.cbors.gz"
    path.write_bytes(gzip.compress(b"".join(records)[:cut]))
    monkeypatch.setattr(dump, "_GZ_CHUNK", 700)
    reader = read_dump(path)
    assert [next(reader).event_number for _ in range(4)] == [0, 1, 2, 3]
    offset = sum(len(r) for r in records[:4])
    with pytest.raises(DumpError, match=f"t.cbors.gz: truncated record at byte offset {offset} "):
        next(reader)


# === Truncation and corruption ===


def test_unmappable_files_are_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The path taken when mmap fails (e.g. some FUSE file systems): same records.
    path = tmp_path / "s.cbors"
    write_dump(path, [msg(i, {"s": ("t", [bytes(100 * i), bytes(70_000)])}) for i in range(9)])
    monkeypatch.setattr(dump, "_GZ_CHUNK", 500)
    streamed = list(dump._Scanner(str(path)).records_of_stream(open(path, "rb")))
    assert content(streamed) == content(read_dump(path))


@pytest.mark.parametrize("suffix", [".cbors", ".cbors.gz"])
def test_absurd_lengths_are_truncation_not_memory_errors(tmp_path: Path, suffix: str) -> None:
    good = oracle(msg(0, {}))
    # a frame claiming 2**62 bytes, and an array claiming 2**62 frames
    for claim in [b"\x5b" + struct.pack(">Q", 2**62), b"\x9b" + struct.pack(">Q", 2**62)]:
        bad = oracle(msg(1, {"s": ("t", [])}))[:-30]
        bad = bad[:-1] + claim + b"\x00" * 5000
        data = good + bad
        path = tmp_path / f"x{suffix}"
        path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
        reader = read_dump(path)
        assert next(reader).event_number == 0
        with pytest.raises(DumpError, match=f"truncated record at byte offset {len(good)} "):
            next(reader)


def test_truncation_at_every_byte(tmp_path: Path) -> None:
    records = [
        oracle(msg(0, {"eiger": ("STINS", [b'{"htype":"image"}', bytes(300)]), "p": ("PCAP", [])})),
        oracle(msg(1, {})),
        oracle(msg(70000, {"x": ("t", [b"z" * 30])})),
    ]
    data = b"".join(records)
    ends = np.cumsum([len(r) for r in records]).tolist()
    path = tmp_path / "cut.cbors"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        complete = sum(1 for e in ends if e <= cut)
        got: list[int] = []
        if cut in [0, *ends]:
            got = [m.event_number for m in read_dump(path)]
        else:
            start = max([0, *(e for e in ends if e <= cut)])
            with pytest.raises(DumpError, match=f"truncated record at byte offset {start} "):
                for m in read_dump(path):
                    got.append(m.event_number)
        assert got == [0, 1, 70000][:complete], cut


def test_garbage_between_records(tmp_path: Path) -> None:
    r0, r1 = oracle(msg(0, {"s": ("t", [b"a"])})), oracle(msg(1, {}))
    path = tmp_path / "g.cbors"
    cases = [
        (b"\xff\x00", "not CBOR at byte offset {o} in the record at byte offset {o}: break"),
        (b"\x1c", "not CBOR at byte offset {o} .*reserved"),
        (b"\x82\x01\xf8\x05", "not CBOR at byte offset {p} .*simple value"),
        (
            cbor2.dumps(42),
            "record at byte offset {o} is not a dranspose record .*expected tag 55799",
        ),
        (cbor2.dumps(CBORTag(55799, "x")), "is not a dranspose record .*decodes to str"),
        (b"\x81" * 600 + b"\x00", "not CBOR at byte offset {d} .*nested deeper than 512"),
    ]
    o = len(r0)
    for garbage, pattern in cases:
        path.write_bytes(r0 + garbage + r1)
        reader = read_dump(path)
        assert next(reader).event_number == 0
        with pytest.raises(DumpError, match=pattern.format(o=o, p=o + 2, d=o + 512)):
            next(reader)


def test_bad_text_and_datetime_are_dump_errors(tmp_path: Path) -> None:
    good = oracle(msg(0, {"ab": ("t", [])}))
    bad_name = good.replace(b"\x62ab", b"\x62\xff\xfe")
    bad_date = oracle(msg(0, {}))[:-29] + b"\x74" + b"2024-13-45T00:00:00Z"
    for data in [bad_name, bad_date]:
        (tmp_path / "b.cbors").write_bytes(good + data)
        with pytest.raises(DumpError, match=f"bad record at byte offset {len(good)}"):
            list(read_dump(tmp_path / "b.cbors"))


# === Fallback to cbor2 ===


@pytest.mark.parametrize("gz_chunk", [0, 40, 1 << 20])
def test_fallback_records_then_fast_path_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz_chunk: int
) -> None:
    fast0, fast3 = oracle(msg(0, {"s": ("t", [b"x"])})), oracle(msg(3, {"s": ("t", [b"y"])}))
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    # a datetime as tag 1, indefinite-length frame array, an unknown tag around a frame,
    # an extra 4th field, an event number beyond int64
    tag1 = cbor2.dumps(CBORTag(55799, CBORTag(42877, [1, {}, epoch])), datetime_as_timestamp=True)
    indef = bytes.fromhex("d9d9f7 d9a77d 82 02 a1 61") + b"s" + bytes.fromhex("d9a77e 82 61") + b"t"
    indef += bytes.fromhex("9f 41 61 5f 41 62 41 63 ff ff")  # [_ b"a", (_ b"b" b"c")]
    unknown = cbor2.dumps(
        CBORTag(
            55799, CBORTag(42877, [4, {"u": CBORTag(42878, ["t", [CBORTag(45000, b"q")]])}, T0])
        )
    )
    extra = cbor2.dumps(CBORTag(55799, CBORTag(42877, [5, {}, T0, "extra"])))
    huge = oracle(msg(2**64 + 5, {"s": ("t", [b"h"])}))
    data = fast0 + tag1 + indef + unknown + extra + huge + fast3
    path = tmp_path / ("f.cbors.gz" if gz_chunk else "f.cbors")
    path.write_bytes(gzip.compress(data) if gz_chunk else data)
    monkeypatch.setattr(dump, "_GZ_CHUNK", gz_chunk or dump._GZ_CHUNK)
    got = list(read_dump(path))
    assert [m.event_number for m in got] == [0, 1, 2, 4, 5, 2**64 + 5, 3]
    assert got[1].created_at == epoch
    assert got[2].streams["s"].frames == [b"a", b"bc"]
    assert got[3].streams["u"].frames == [CBORTag(45000, b"q")]  # passed through, as in 0.2
    assert got[4].created_at == T0
    assert [raw(f) for f in got[6].streams["s"].frames] == [b"y"]


def test_non_minimal_heads_take_the_fast_path(tmp_path: Path) -> None:
    def text(s: bytes, width: int) -> bytes:
        fmt = {1: ">BB", 2: ">BH", 4: ">BI", 8: ">BQ"}[width]
        return struct.pack(fmt, 0x60 | {1: 24, 2: 25, 4: 26, 8: 27}[width], len(s)) + s

    date = T0.isoformat().replace("+00:00", "Z").encode()
    rec = (b"\xda\x00\x00\xd9\xf7" + b"\xdb" + struct.pack(">Q", 42877) + b"\x98\x03"
           + b"\x1b" + struct.pack(">Q", 9) + b"\xb9\x00\x01" + text(b"name", 2)
           + b"\xd9\xa7\x7e\x9a\x00\x00\x00\x02" + text(b"STINS", 8) + b"\x99\x00\x02"
           + b"\x5a" + struct.pack(">I", 3) + b"abc" + b"\x5b" + struct.pack(">Q", 1) + b"d"
           + b"\xd8\x00" + text(date, 4))  # fmt: skip
    t = dump._Tables()
    assert (
        _cborscan.scan(rec, 0, len(rec), t.records, t.streams, t.frames, t.out)
        == _cborscan.Status.ST_OK
    )
    assert t.out[2] == 1 and t.out[4] == 2
    (tmp_path / "n.cbors").write_bytes(rec)
    (got,) = read_dump(tmp_path / "n.cbors")
    assert (got.event_number, got.created_at) == (9, T0)
    assert got.streams["name"].typ == "STINS" and got.streams["name"].frames == [b"abc", b"d"]
    assert got.model_dump() == cbor2.loads(rec, tag_hook=dump.message_tag_hook).model_dump()


# === The kernel itself ===


def test_scan_resumes_when_tables_are_full() -> None:
    data = b"".join(
        oracle(msg(i, {"a": ("t", [b"1", b"2"]), "b": ("t", [b"3"])})) for i in range(5)
    )
    t = dump._Tables(records=2, streams=3, frames=4)
    seen, pos = [], 0
    while True:
        status = _cborscan.scan(data, pos, len(data), t.records, t.streams, t.frames, t.out)
        seen += t.records[: t.out[2], 2].tolist()
        pos = int(t.out[1])
        if status == _cborscan.Status.ST_OK:
            break
        assert status == _cborscan.Status.ST_FULL and t.out[2] == 1  # 2 streams / 3 frames fit once
    assert seen == [0, 1, 2, 3, 4]
    one = dump._Tables(records=4, streams=1, frames=1)
    assert _cborscan.scan(data, 0, len(data), one.records, one.streams, one.frames, one.out) == 1
    assert one.out.tolist()[2:7] == [0, 0, 0, 2, 3]  # the rows the first record needs


_CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.binary(max_size=40) | st.text(max_size=40),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=5), kids, max_size=5)
    | kids.map(lambda v: CBORTag(1234, v)),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(_CBOR_VALUES, st.data())
def test_skip_item_measures_any_cbor(value: Any, data: st.DataObject) -> None:
    enc = bytes(cbor2.dumps(value)) + b"\x00"
    out = np.zeros(3, np.int64)
    assert _cborscan.skip_item(enc, 0, len(enc), out) == _cborscan.Status.ST_OK
    assert out[1] == len(enc) - 1
    cut = data.draw(st.integers(0, len(enc) - 2))
    assert _cborscan.skip_item(enc, 0, cut, out) == _cborscan.Status.ST_INCOMPLETE
    assert cut < out[1] <= len(enc) - 1


def test_skip_item_rejects_malformed() -> None:
    out = np.zeros(3, np.int64)
    for bad, pos, why in [
        (b"\x5f\x61a\xff", 1, _cborscan.Why.WHY_CHUNK),  # text chunk in a byte string
        (b"\x1f", 0, _cborscan.Why.WHY_INDEF),
        (b"\x83\x01\xff", 2, _cborscan.Why.WHY_BREAK),
        (b"\xfc", 0, _cborscan.Why.WHY_RESERVED),
    ]:
        assert _cborscan.skip_item(bad, 0, len(bad), out) == _cborscan.Status.ST_INVALID
        assert (out[1], out[2]) == (pos, why)
    assert _cborscan.skip_item(b"\x5b" + b"\xff" * 8, 0, 9, out) == _cborscan.Status.ST_INCOMPLETE
    assert out[1] == 2**63 - 1  # a length no buffer can hold saturates instead of overflowing
    with pytest.raises(ValueError, match="start <= stop"):
        _cborscan.skip_item(b"\x00", 0, 2, out)


_SAMPLE = b"".join(
    oracle(msg(i, {"eiger": ("STINS", [b'{"htype":"image"}', bytes(40 + i)]), "p": ("PCAP", [])}))
    for i in range(4)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_SAMPLE) - 1), st.integers(0, 255)), max_size=6))
def test_corrupted_bytes_give_records_or_dump_error(
    tmp_path_factory: Any, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(_SAMPLE)
    for pos, value in flips:
        data[pos] = value
    path = tmp_path_factory.mktemp("fuzz") / "c.cbors"
    path.write_bytes(bytes(data))
    try:
        for m in read_dump(path):
            assert isinstance(m, InternalWorkerMessage)
    except DumpError as exc:
        assert "c.cbors: " in str(exc) and "byte offset" in str(exc)
