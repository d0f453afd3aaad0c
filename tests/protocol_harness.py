"""Streaming a capture into a protocol ingester driven by ``tests/ingester_harness.py``.

The protocol tests (tests/test_proto_*.py) all do it the same way: a real upstream socket
(``CaptureSender``), one ingester, one worker, one scan whose trigger map asks that worker for
every event; this is that, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from dranspose_fast.event import StreamData
from dranspose_fast.ingester import Ingester
from tests.captures import CaptureSender
from tests.ingester_harness import Harness


def stream_capture(h: Harness, cls: type[Ingester], messages: list[list[bytes]], n_events: int,
                   streams: Sequence[str], *, socket: Literal["PUB", "PUSH"] = "PUB",
                   exact: bool = False
                   ) -> tuple[Any, list[tuple[int, dict[str, StreamData]]]]:
    """Send the messages upstream of a fresh ``cls`` ingester and collect the first events.

    Parameters
    ----------
    h
        The harness (its simulated controller and worker).
    cls
        The ingester class, built on ``streams`` with its upstream at the sender.
    messages
        The multipart messages to send.
    n_events
        How many events the scan's trigger map asks worker ``w0`` for (and we wait for).
    streams
        The ingester's streams (each event carries all of them).
    socket
        The sender's socket type.
    exact
        Also assert that nothing beyond those events reaches the worker.

    Returns
    -------
    tuple
        The ingester and the events ``(event_number, streams)`` the worker received.
    """
    sender = CaptureSender(socket)
    try:
        ing = h.ingester(cls, list(streams), upstream_url=sender.url)
        w0 = h.worker("w0", ing)
        uid = h.start_scan(list(streams), ing)
        h.assign(uid, 0, [[1] * len(streams)] * n_events, ["w0"])
        sender.send(messages)
        got = w0.receive(n_events)
        if exact:
            assert w0.nothing_more(0.2)
        return ing, got
    finally:
        sender.close()
