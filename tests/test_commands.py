"""``runtime.commands.CommandQueue``: the one way other threads reach a data thread."""

from __future__ import annotations

import threading
from typing import Any

import zmq

from dranspose_fast.runtime.commands import CommandQueue


def test_commands_arrive_in_order_and_one_wake_up_stands_for_many() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    commands: CommandQueue[int] = CommandQueue(ctx)
    poller = zmq.Poller()
    poller.register(commands.socket, zmq.POLLIN)
    try:
        assert not dict(poller.poll(0))
        for n in range(5):
            commands.post(n)
        assert commands.socket in dict(poller.poll(1000))
        assert list(commands.drain()) == [0, 1, 2, 3, 4]
        assert not dict(poller.poll(0))  # the wake-ups were coalesced and consumed
        commands.wake()  # a wake-up without a command
        assert commands.socket in dict(poller.poll(1000))
        assert list(commands.drain()) == []
    finally:
        commands.close()
        commands.close()  # idempotent
        commands.wake()  # after close: nobody to wake, no error
        ctx.term()


def test_posts_from_other_threads_are_all_drained() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    commands: CommandQueue[tuple[int, int]] = CommandQueue(ctx)
    poller = zmq.Poller()
    poller.register(commands.socket, zmq.POLLIN)

    def post(thread: int) -> None:
        for n in range(1000):
            commands.post((thread, n))

    threads = [threading.Thread(target=post, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    got: list[tuple[int, int]] = []
    try:
        while len(got) < 4000:
            assert dict(poller.poll(5000)), f"no wake-up with {len(got)} of 4000 drained"
            got.extend(commands.drain())
        for t in threads:
            t.join()
        got.extend(commands.drain())
        assert len(got) == 4000
        for thread in range(4):
            assert [n for t, n in got if t == thread] == list(range(1000))
    finally:
        commands.close()
        ctx.term()
