"""Read and write recorded dump files in the dranspose 0.2 format (docs/compatibility.md).

A ``.cbors`` dump is a plain concatenation of CBOR records, each
``tag 55799 (tag 42877 [event_number, {stream: tag 42878 [typ, [frame, ...]]}, created_at])``.
``.cbor`` is the same, ``.gz`` is either gzip-compressed, ``.pkls`` is the legacy format of
repeated ``pickle.dump`` of ``InternalWorkerMessage``.

Reading is zero-copy where it can be: a plain file is memory-mapped (copy-on-write, so user code
writing into a frame never touches the file) and the compiled scanner
(``dranspose_fast._cborscan``) indexes the records without decoding them.  Frames below
``COPY_THRESHOLD`` become ``bytes`` slices, larger ones ``zmq.Frame`` views of the mapped pages.
A ``.gz`` file is decompressed in chunks into anonymous mappings that are scanned the same way,
so frames are the decompression output itself (a record that straddles two chunks is moved once).
Records that do not fit the scanner's layout (indefinite lengths, other tags, extra fields) are
decoded by cbor2 with ``message_tag_hook``, and scanning goes on after them.

Writing produces the bytes dranspose 0.2's ingester ``Dumper`` produces with cbor2 (same head
encodings, same datetime text), with frames handed to the file object without a copy.
"""

from __future__ import annotations

import gzip
import io
import mmap
import operator
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO, Final

import cbor2
import numpy as np
import numpy.typing as npt
import zmq
from cbor2 import CBORTag

from dranspose_fast import _cborscan
from dranspose_fast._cborscan import Status, Why
from dranspose_fast.errors import DumpError
from dranspose_fast.event import (
    TAG_INTERNAL_MESSAGE,
    InternalWorkerMessage,
    StreamData,
    make_internal,
    make_stream_data,
    message_tag_hook,
)
from dranspose_fast.helpers import safe_pickle
from dranspose_fast.helpers.safe_pickle import AllowList

__all__ = [
    "COPY_THRESHOLD",
    "DumpWriter",
    "PathLike",
    "encode_record",
    "get_internals",
    "read_dump",
    "write_dump",
]

PathLike = str | os.PathLike[str]
_Reader = gzip.GzipFile | io.BufferedReader

#: Frames of at least this many bytes are handed out as zero-copy ``zmq.Frame`` views.
COPY_THRESHOLD: Final[int] = zmq.COPY_THRESHOLD
#: Decompressed bytes per chunk of a ``.gz`` dump (grown for records larger than a quarter).
_GZ_CHUNK: Final[int] = 16 << 20
#: First bytes of a record: the self-described CBOR tag 55799.
_CBOR_MAGIC: Final[bytes] = b"\xd9\xd9\xf7"

_WHY_TEXT: Final[dict[int, str]] = {
    Why.WHY_SELF_TAG: "expected tag 55799",
    Why.WHY_MSG_TAG: "expected tag 42877 (InternalWorkerMessage)",
    Why.WHY_MSG_ARRAY: "expected an array of 2 or 3 items",
    Why.WHY_EVENT: "expected an unsigned event number below 2**63",
    Why.WHY_STREAMS: "expected a map of streams",
    Why.WHY_NAME: "expected a text stream name",
    Why.WHY_STREAM_TAG: "expected tag 42878 (StreamData)",
    Why.WHY_STREAM_ARRAY: "expected an array [typ, frames]",
    Why.WHY_TYP: "expected a text typ",
    Why.WHY_FRAMES: "expected an array of frames",
    Why.WHY_FRAME: "expected a byte-string frame",
    Why.WHY_DATE_TAG: "expected tag 0 (created_at)",
    Why.WHY_DATE_TEXT: "expected a text created_at",
    Why.WHY_RESERVED: "reserved additional information (28-30)",
    Why.WHY_BREAK: "break byte 0xff outside an indefinite-length item",
    Why.WHY_CHUNK: "chunk of an indefinite-length string has the wrong type",
    Why.WHY_INDEF: "indefinite length on a type that has none",
    Why.WHY_SIMPLE: "two-byte simple value below 32",
    Why.WHY_DEPTH: f"nested deeper than {_cborscan.MAX_NESTING} levels",
}

# === Reading ===


def read_dump(path: PathLike) -> Iterator[InternalWorkerMessage]:
    """Iterate over the records of a dump file.

    Parameters
    ----------
    path
        ``.cbors`` / ``.cbor`` (any other suffix is read as CBOR too, as in dranspose 0.2),
        optionally ``.gz``-compressed, or a legacy ``.pkls``.  A ``.pkls`` file that starts like
        a CBOR dump is read as CBOR (0.2's ingester wrote CBOR whatever the suffix).  Pickles are
        read by the restricted unpickler (``helpers.safe_pickle``): plain data, numpy and the
        two message classes only, so a ``.pkls`` file cannot run code.

    Returns
    -------
    Iterator[InternalWorkerMessage]
        The records in file order.  Frames below ``COPY_THRESHOLD`` bytes are ``bytes``, the
        others ``zmq.Frame`` views of the (copy-on-write) mapped file.  ``created_at`` is an
        aware datetime; 2-element records get the time of reading.

    Raises
    ------
    FileNotFoundError
        At once, if the file does not exist.
    DumpError
        After every complete record before it, for a record that is truncated, not CBOR or not a
        dranspose record; the message names the file and the record's byte offset (in the
        decompressed stream for ``.gz``).
    """
    name = os.fspath(path)
    compressed = name.endswith(".gz")
    fh: _Reader = gzip.open(name, "rb") if compressed else open(name, "rb")
    try:
        stem = name[:-3] if compressed else name
        if stem.endswith(".pkls") and _peek(fh, len(_CBOR_MAGIC)) != _CBOR_MAGIC:
            return _read_pickles(fh, name)
        if not compressed:
            mapped = _map_file(fh)
            if mapped is not None:
                fh.close()
                return _Scanner(name).records_of_mapping(mapped)
        return _Scanner(name).records_of_stream(fh)
    except BaseException:
        fh.close()
        raise


#: dranspose 0.2's name for the reader (``dranspose.replay.get_internals``).
get_internals = read_dump


def _peek(fh: _Reader, n: int) -> bytes:
    return fh.peek(n)[:n]


def _map_file(fh: _Reader) -> mmap.mmap | None:
    """A private (copy-on-write) mapping of the file, or None if empty or not mappable."""
    size = os.fstat(fh.fileno()).st_size
    if size == 0:
        return None
    try:
        return mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):
        return None  # e.g. a FUSE file system without mmap: stream it instead


class _Tables:
    """The scanner's caller-allocated index tables, grown when one record needs more rows."""

    def __init__(self, records: int = 1024, streams: int = 4096, frames: int = 16384) -> None:
        self.records = np.empty((records, _cborscan.REC_COLS), np.int64)
        self.streams = np.empty((streams, _cborscan.STREAM_COLS), np.int64)
        self.frames = np.empty((frames, _cborscan.FRAME_COLS), np.int64)
        self.out: npt.NDArray[np.int64] = np.zeros(_cborscan.OUT_SIZE, np.int64)

    def grow(self, streams: int, frames: int) -> None:
        streams, frames = max(streams, len(self.streams)), max(frames, len(self.frames))
        self.streams = np.empty((streams, _cborscan.STREAM_COLS), np.int64)
        self.frames = np.empty((frames, _cborscan.FRAME_COLS), np.int64)


class _Scanner:
    """Turns scanned index tables into messages; one per file being read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tables = _Tables()
        self.texts: dict[bytes, str] = {}  # stream names and typs repeat in every record

    # --- plain files ---

    def records_of_mapping(self, mm: mmap.mmap) -> Iterator[InternalWorkerMessage]:
        view = memoryview(mm)
        pos, size = 0, len(mm)
        while pos < size:
            status, end, batch = self._scan(mm, view, pos, size)
            yield from batch
            if status == Status.ST_FOREIGN:
                yield self._fallback(mm, end, 0)
                end = int(self.tables.out[5])
            elif status == Status.ST_INCOMPLETE:
                raise self._truncated(end, size)
            elif status == Status.ST_INVALID:
                raise self._invalid(0)
            pos = end

    # --- compressed or unmappable files ---

    def records_of_stream(self, fh: _Reader) -> Iterator[InternalWorkerMessage]:
        with fh:
            cap = _GZ_CHUNK
            buf = mmap.mmap(-1, cap)  # anonymous: freed when the last frame view goes
            view = memoryview(buf)
            base = pos = fill = 0  # base: stream offset of buf[0]
            shared = False  # a frame views buf: bytes below `fill` must stay as they are
            eof = False
            while True:
                if not eof and fill < cap:
                    got = fh.readinto(view[fill:])
                    eof = not got
                    fill += got
                    continue  # scan full chunks only (or the last one)
                status, end, batch = self._scan(buf, view, pos, fill)
                shared = shared or self._shared
                yield from batch
                need = fill + 1
                if status == Status.ST_FOREIGN:
                    yield self._fallback(buf, end, base)
                    pos = int(self.tables.out[5])
                    continue
                if status == Status.ST_INVALID:
                    raise self._invalid(base)
                pos = end
                if status == Status.ST_FULL:
                    continue
                if eof:
                    if status == Status.ST_OK:
                        return
                    raise self._truncated(base + pos, base + fill)
                if status == Status.ST_INCOMPLETE:
                    need = int(self.tables.out[5])
                # The chunk is full and ends inside a record: move the record's start to the
                # front of a chunk that has room for at least what the record is known to need.
                tail = fill - pos
                want = max(need - pos, tail + 1)
                grow = want > cap // 2
                if grow or shared:
                    # `want` may be absurd in a corrupt file: grow at most 8x per chunk read
                    cap = max(2 * cap, min(2 * want, 8 * cap)) if grow else cap
                    old = view
                    buf = mmap.mmap(-1, cap)
                    view = memoryview(buf)
                    view[:tail] = old[pos:fill]
                    del old
                    shared = False
                else:
                    buf.move(0, pos, tail)
                base += pos
                pos, fill = 0, tail

    # --- shared ---

    def _scan(
        self, mm: mmap.mmap, view: memoryview, pos: int, stop: int
    ) -> tuple[int, int, Iterator[InternalWorkerMessage]]:
        """One scanner call: its status, where it stopped and the records before that.

        The records are built lazily (so a consumer that drops them keeps the working set in
        cache); exhaust them before the next call, which reuses the tables.
        """
        t = self.tables
        status = _cborscan.scan(mm, pos, stop, t.records, t.streams, t.frames, t.out)
        n_rec, n_st, n_fr = int(t.out[2]), int(t.out[3]), int(t.out[4])
        if status == Status.ST_FULL and n_rec == 0:
            t.grow(int(t.out[5]), int(t.out[6]))  # a single record larger than the tables
        self._shared = bool(n_fr) and bool((t.frames[:n_fr, 1] >= COPY_THRESHOLD).any())
        batch = self._build(mm, view, n_rec, n_st, n_fr) if n_rec else iter(())
        return status, int(t.out[1]), batch

    def _build(
        self, mm: mmap.mmap, view: memoryview, n_rec: int, n_st: int, n_fr: int
    ) -> Iterator[InternalWorkerMessage]:
        t = self.tables
        streams = t.streams[:n_st].tolist()
        frames = t.frames[:n_fr].tolist()
        text = self._text
        threshold = COPY_THRESHOLD
        frame_cls = zmq.Frame
        for start, _end, event, s0, ns, date_off, date_len in t.records[:n_rec].tolist():
            try:
                msg_streams: dict[Any, StreamData] = {}
                for name_off, name_len, typ_off, typ_len, f0, nf in streams[s0 : s0 + ns]:
                    data = [
                        mm[off : off + size]
                        if size < threshold
                        else frame_cls(view[off : off + size], copy=False)
                        for off, size in frames[f0 : f0 + nf]
                    ]
                    msg_streams[text(mm, name_off, name_len)] = make_stream_data(
                        text(mm, typ_off, typ_len), data
                    )
                created = None
                if date_off >= 0:
                    created = _parse_datetime(mm[date_off : date_off + date_len].decode())
            except ValueError as exc:  # bad UTF-8 or an unreadable created_at
                raise DumpError(f"{self.name}: bad record at byte offset {start}: {exc}") from exc
            yield make_internal(event, msg_streams, created)

    def _text(self, mm: mmap.mmap, off: int, size: int) -> str:
        key = mm[off : off + size]
        value = self.texts.get(key)
        if value is None:
            if len(self.texts) > 4096:
                self.texts.clear()
            value = self.texts[key] = key.decode()
        return value

    def _fallback(self, mm: mmap.mmap, pos: int, base: int) -> InternalWorkerMessage:
        """Decode one record that is valid CBOR but not the scanner's layout with cbor2."""
        end = int(self.tables.out[5])
        why = _WHY_TEXT.get(int(self.tables.out[7]), "unexpected layout")
        where = f"{self.name}: record at byte offset {base + pos}"
        try:
            msg = cbor2.loads(mm[pos:end], tag_hook=message_tag_hook)
        except Exception as exc:
            raise DumpError(f"{where} is not a readable dranspose record: {exc}") from exc
        if isinstance(msg, CBORTag) and msg.tag == TAG_INTERNAL_MESSAGE:
            msg = _extra_fields(msg.value)
        if not isinstance(msg, InternalWorkerMessage):
            raise DumpError(
                f"{where} is not a dranspose record ({why} at byte offset "
                f"{base + int(self.tables.out[6])}; it decodes to {type(msg).__name__})"
            )
        return _zero_copy_frames(msg)

    def _invalid(self, base: int) -> DumpError:
        out = self.tables.out
        return DumpError(
            f"{self.name}: not CBOR at byte offset {base + int(out[6])} in the record at byte "
            f"offset {base + int(out[1])}: {_WHY_TEXT.get(int(out[7]), 'malformed')}"
        )

    def _truncated(self, pos: int, size: int) -> DumpError:
        return DumpError(
            f"{self.name}: truncated record at byte offset {pos} "
            f"(the data ends at byte offset {size})"
        )


def _extra_fields(value: Any) -> Any:
    """A message array with more than 3 items (written by something newer): keep the known ones,
    as dranspose 0.2's decoder does."""
    if isinstance(value, list | tuple) and len(value) > 3 and isinstance(value[0], int):
        if isinstance(value[1], Mapping):  # cbor2 6 hands tag hooks immutable frozendicts
            created = value[2] if isinstance(value[2], datetime) else None
            return make_internal(value[0], dict(value[1]), created)
    return CBORTag(TAG_INTERNAL_MESSAGE, value)


def _parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    # RFC 3339 requires an offset; read a missing one as UTC rather than refuse the record.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _zero_copy_frames(msg: InternalWorkerMessage) -> InternalWorkerMessage:
    """Apply the frame policy to messages decoded by cbor2 or pickle (frames are ``bytes``)."""
    for stream in msg.streams.values():
        if isinstance(stream, StreamData):
            frames: list[Any] = [
                zmq.Frame(f, copy=False) if isinstance(f, bytes) and len(f) >= COPY_THRESHOLD else f
                for f in stream.frames
            ]
            stream.frames = frames
    return msg


# --- legacy pickles ---

#: What a ``.pkls`` dump may hold beside plain data: 0.2's message classes, read as ours.
_DUMP_CLASSES: Final = AllowList(
    {f"{module}:{cls.__name__}": cls
     for module in ("dranspose.event", "dranspose_fast.event")
     for cls in (InternalWorkerMessage, StreamData)},
    hint=" in a dump file (it holds InternalWorkerMessage and StreamData only)")


def _read_pickles(fh: _Reader, name: str) -> Iterator[InternalWorkerMessage]:
    with fh:
        while _peek(fh, 1):
            pos = fh.tell()
            try:
                msg = safe_pickle.load(fh, _DUMP_CLASSES)
            except EOFError as exc:
                raise DumpError(f"{name}: truncated pickle at byte offset {pos}") from exc
            except Exception as exc:
                raise DumpError(f"{name}: bad pickle at byte offset {pos}: {exc}") from exc
            if not isinstance(msg, InternalWorkerMessage):
                raise DumpError(
                    f"{name}: pickle at byte offset {pos} is a {type(msg).__name__}, "
                    "not an InternalWorkerMessage"
                )
            yield _zero_copy_frames(msg)


# === Writing ===

_RECORD_START: Final[bytes] = b"\xd9\xd9\xf7\xd9\xa7\x7d\x83"  # tags 55799, 42877, array(3)
_STREAM_START: Final[bytes] = b"\xd9\xa7\x7e\x82"  # tag 42878, array(2)
_DATE_TAG: Final[bytes] = b"\xc0"  # tag 0
_JOIN_BELOW: Final[int] = 1024  # smaller frames are joined with the heads into one write
_WRITE_BUFFER: Final[int] = 1 << 20  # larger frames skip the buffer: written from their memory
_PACK = (struct.Struct(">BB").pack, struct.Struct(">BH").pack, struct.Struct(">BI").pack,
         struct.Struct(">BQ").pack)  # fmt: skip


def _head(major: int, n: int) -> bytes:
    """The shortest CBOR head for (major, n), as cbor2 writes it."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return _PACK[0](mt | 24, n)
    if n < 0x10000:
        return _PACK[1](mt | 25, n)
    if n < 0x100000000:
        return _PACK[2](mt | 26, n)
    return _PACK[3](mt | 27, n)


def _int(n: int) -> bytes:
    if 0 <= n < 1 << 64:
        return _head(0, n)
    if -(1 << 64) <= n < 0:
        return _head(1, -1 - n)
    return bytes(cbor2.dumps(n))  # bignum tags, exactly as cbor2 writes them


def _text(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise DumpError(f"{what} must be a str, not {type(value).__name__}")
    raw = value.encode()
    return _head(3, len(raw)) + raw


def _datetime(value: datetime) -> bytes:
    if not isinstance(value, datetime):
        raise DumpError(f"created_at must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # cbor2 refuses naive datetimes; ours mean UTC
    return _DATE_TAG + _text(value.isoformat().replace("+00:00", "Z"), "created_at")


def _record_parts(msg: InternalWorkerMessage) -> list[bytes | bytearray | memoryview]:
    """The record as CBOR: small pieces joined, large frames as views of their buffers."""
    parts: list[bytes | bytearray | memoryview] = []
    head = bytearray(_RECORD_START)
    head += _int(operator.index(msg.event_number))
    head += _head(5, len(msg.streams))
    for name, stream in msg.streams.items():
        if not isinstance(stream, StreamData):
            raise DumpError(f"stream {name!r}: expected StreamData, not {type(stream).__name__}")
        head += _text(name, "stream name")
        head += _STREAM_START
        head += _text(stream.typ, f"typ of stream {name!r}")
        head += _head(4, len(stream.frames))
        for frame in stream.frames:
            try:
                data = frame.buffer if isinstance(frame, zmq.Frame) else memoryview(frame)
            except TypeError as exc:
                raise DumpError(f"stream {name!r}: frame of type {type(frame).__name__} "
                                "is not a buffer") from exc  # fmt: skip
            if not data.c_contiguous:
                data = memoryview(data.tobytes())
            if data.ndim != 1 or data.itemsize != 1:
                data = data.cast("B")
            head += _head(2, data.nbytes)
            if data.nbytes < _JOIN_BELOW:
                head += data
            else:
                parts.append(head)
                parts.append(data)
                head = bytearray()
    head += _datetime(msg.created_at)
    parts.append(head)
    return parts


def encode_record(msg: InternalWorkerMessage) -> bytes:
    """One dump record as bytes, identical to what dranspose 0.2's ``Dumper`` writes.

    Parameters
    ----------
    msg
        The message; frames may be ``bytes``, ``zmq.Frame`` or any contiguous buffer.

    Returns
    -------
    bytes
        ``tag 55799 (tag 42877 [event_number, streams, tag 0 created_at])`` in cbor2's encoding.
    """
    return b"".join(_record_parts(msg))


class DumpWriter:
    """Append records to a dump file, like dranspose 0.2's ingester ``Dumper``.

    Parameters
    ----------
    path
        The file, opened in append-binary mode; a ``.gz`` suffix appends a gzip member.  Every
        other suffix (``.pkls`` included) gets CBOR, as in dranspose 0.2.

    Examples
    --------
    >>> with DumpWriter("/tmp/doctest-dump.cbors") as w:  # doctest: +SKIP
    ...     w.write(msg)
    """

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        self._fh: gzip.GzipFile | BinaryIO = (
            gzip.open(self.path, "ab")
            if self.path.endswith(".gz")
            else open(self.path, "ab", buffering=_WRITE_BUFFER)
        )

    def write(self, msg: InternalWorkerMessage) -> None:
        """Append one record; large frames go to the file object without a copy."""
        for part in _record_parts(msg):
            self._fh.write(part)

    def flush(self) -> None:
        """Push buffered records to the operating system."""
        self._fh.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        self._fh.close()

    def __enter__(self) -> DumpWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_dump(path: PathLike, messages: Iterable[InternalWorkerMessage]) -> int:
    """Append ``messages`` to the dump at ``path``; returns how many records were written."""
    count = 0
    with DumpWriter(path) as writer:
        for msg in messages:
            writer.write(msg)
            count += 1
    return count
