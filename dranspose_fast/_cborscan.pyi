"""Stub of the compiled dump scanner (``_ext/_cborscan.pyx``); used by ``dranspose_fast.dump``."""

from enum import IntEnum
from mmap import mmap
from typing import Final

import numpy as np
import numpy.typing as npt

class Status(IntEnum):
    ST_OK = 0
    ST_FULL = 1
    ST_INCOMPLETE = 2
    ST_FOREIGN = 3
    ST_INVALID = 4

class Why(IntEnum):
    WHY_NONE = 0
    WHY_SELF_TAG = 1
    WHY_MSG_TAG = 2
    WHY_MSG_ARRAY = 3
    WHY_EVENT = 4
    WHY_STREAMS = 5
    WHY_NAME = 6
    WHY_STREAM_TAG = 7
    WHY_STREAM_ARRAY = 8
    WHY_TYP = 9
    WHY_FRAMES = 10
    WHY_FRAME = 11
    WHY_DATE_TAG = 12
    WHY_DATE_TEXT = 13
    WHY_RESERVED = 20
    WHY_BREAK = 21
    WHY_CHUNK = 22
    WHY_INDEF = 23
    WHY_SIMPLE = 24
    WHY_DEPTH = 25

# Table widths.  Record row: start, end, event_number, first stream row, n_streams,
# created_at text offset (-1: none), its length.  Stream row: name offset, name length,
# typ offset, typ length, first frame row, n_frames.  Frame row: offset, length.
REC_COLS: Final[int]
STREAM_COLS: Final[int]
FRAME_COLS: Final[int]
OUT_SIZE: Final[int]
MAX_NESTING: Final[int]

_Buffer = bytes | bytearray | memoryview | mmap | npt.NDArray[np.uint8]
_Table = npt.NDArray[np.int64]

def scan(
    buf: _Buffer,
    start: int,
    stop: int,
    records: _Table,
    streams: _Table,
    frames: _Table,
    out: _Table,
) -> int:
    """Index fast-layout records of ``buf[start:stop]``; ``out`` gets
    ``[status, pos, n_records, n_streams, n_frames, aux, err_pos, reason]``."""

def skip_item(buf: _Buffer, start: int, stop: int, out: _Table) -> int:
    """Measure one CBOR item at ``buf[start]``; ``out`` gets ``[status, end|need|err, reason]``."""
