"""Ports handed to servers before they start: never the kernel's connection ports, never twice."""

from __future__ import annotations

import socket

from dranspose_fast.runtime import ports


def test_ports_lie_below_the_ephemeral_range_and_are_not_repeated() -> None:
    taken = [ports.free_port() for _ in range(200)]
    assert len(set(taken)) == len(taken)
    assert all(10000 <= p < ports._ephemeral_start() for p in taken)


def test_a_port_in_use_is_skipped() -> None:
    first = ports.free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", first + 1))
        listener.listen()
        ports._walk.next -= 1  # walk over `first` again: it is free, `first + 1` is not
        assert ports.free_port() == first
        assert ports.free_port() not in (first, first + 1)
