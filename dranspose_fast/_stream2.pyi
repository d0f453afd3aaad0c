"""Stub of the compiled DECTRIS Stream V2 decoder (``_ext/_stream2.pyx``).

Used by ``dranspose_fast.middlewares.stream2`` (workers) and the Stream V2 ingester.
"""

from mmap import mmap
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq
from typing_extensions import Buffer

from dranspose_fast.errors import DecodeError

#: What ``decode`` and ``scan`` read: any C-contiguous buffer (``zmq.Frame`` included).
_Message = bytes | bytearray | memoryview | mmap | npt.NDArray[np.generic] | zmq.Frame | Buffer

class Stream2DecodeError(DecodeError):
    """A Stream V2 message is not well-formed CBOR or breaks a rule of a tag it uses.

    ``str(exc)`` is ``"{field}: {problem} (byte {offset})"``, without the field when it is
    empty and without the byte when ``offset`` is -1.
    """

    #: Where: '' for the message itself, else a path like ``data["threshold_1"]`` or
    #: ``channels[2]`` (top-level key bare, deeper keys in ``["..."]``, indices in ``[i]``).
    field: str
    #: What is wrong, without the field.
    problem: str
    #: Byte offset in the message where the problem was found; -1: not tied to a byte.
    offset: int

    def __init__(self, field: str, problem: str, offset: int = -1) -> None: ...

class Tagged:
    """A CBOR item under a tag the decoder does not interpret (compared by tag and value)."""

    def __init__(self, tag: int, value: object) -> None: ...
    @property
    def tag(self) -> int: ...
    @property
    def value(self) -> object: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

def decode(buf: _Message) -> Any:
    """Decode one whole message (one CBOR item, nothing after it); arrays are views of buf.

    Parameters
    ----------
    buf : bytes, bytearray, memoryview, mmap, zmq.Frame or numpy array
        C-contiguous memory holding the message.

    Returns
    -------
    Any
        Usually a ``dict``.  Tag 0/1 -> timezone-aware ``datetime``, 2/3 -> ``int``, typed
        arrays (64..87) -> read-only 1-D numpy views of ``buf`` that keep it alive, tag
        40/1040 -> numpy arrays shaped by their dims (C/Fortran order), tag 56500 -> the
        decompressed ``bytes`` (or, under a typed array, its memory), other tags ->
        ``Tagged``; the self-describe tag 55799 is dropped.

    Raises
    ------
    Stream2DecodeError
        Not well-formed CBOR (truncated, trailing bytes, invalid UTF-8, nested deeper than
        64), or a tag whose content breaks its rule (shape, byte count, dims, unknown
        compression, bad compressed data), naming field and byte.
    BufferError, TypeError
        ``buf`` is not C-contiguous, or not a buffer.
    """

def scan(buf: _Message) -> tuple[str | None, int, int]:
    """Check one whole message as ``decode`` would, without building or decompressing it.

    Every item is walked and every structural rule of ``decode`` checked; byte strings are
    skipped by their length (the cost does not grow with the image), text is not checked
    for UTF-8, compressed sizes come from the 12-byte headers.

    Parameters
    ----------
    buf : bytes, bytearray, memoryview, mmap, zmq.Frame or numpy array
        C-contiguous memory holding the message.

    Returns
    -------
    tuple[str | None, int, int]
        The top-level map's ``type`` (None when absent or not text), ``series_id`` and
        ``image_id`` (-1 when absent or not unsigned integers); keys are matched in
        definite-length encoding.

    Raises
    ------
    Stream2DecodeError
        At the field and byte where ``decode`` raises for a structural problem.
    BufferError, TypeError
        ``buf`` is not C-contiguous, or not a buffer.
    """
