"""Stub of the compiled assembly kernels (``_ext/_assemble.pyx``)."""

from dranspose_fast.event import EventData, StreamData

def make_event(event_number: int, streams: dict[str, StreamData]) -> EventData: ...
def add(
    events: list[tuple[int, dict[str, StreamData]]],
    expected: dict[int, int],
    pending: dict[int, dict[str, StreamData]],
    ready: list[EventData],
) -> int: ...
def expect(
    event_numbers: list[int],
    counts: list[int],
    expected: dict[int, int],
    pending: dict[int, dict[str, StreamData]],
    ready: list[EventData],
) -> None: ...
