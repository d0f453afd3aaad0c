"""Stub of the compiled packed-batch kernels (``_ext/_batch.pyx``).

The kernels build ``dranspose_fast.event`` containers, and ``event`` imports this module: the
stub names them ``Any`` rather than import ``event`` (which would make the two a cycle).
``make_event`` returns an ``EventData``; ``unpack`` yields ``StreamData`` values.
"""

from typing import Any, TypeVar

from typing_extensions import Buffer

from dranspose_fast.errors import DecodeError

_M = TypeVar("_M")

HEADER_SIZE: int
ENTRY_SIZE: int
FRAMEREF_SIZE: int

class BatchFormatError(DecodeError): ...

def construct(
    cls: type[_M], values: dict[str, Any], fields_set: frozenset[str] | set[str]
) -> _M: ...
def make_event(event_number: int, streams: dict[str, Any]) -> Any: ...
def pack(
    entries: list[tuple[int, int, list[Any]]], threshold: int
) -> tuple[bytes, bytes, list[Any]]: ...
def unpack(
    index: Buffer, payload: Buffer, externals: list[Any], streams: list[tuple[str, str]]
) -> list[tuple[int, dict[str, Any]]]: ...
def pack_results(results: list[tuple[int, Buffer]]) -> tuple[bytes, bytes]: ...
def unpack_results(index: Buffer, payload: Buffer) -> list[tuple[int, memoryview]]: ...
