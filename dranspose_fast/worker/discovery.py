"""How a worker finds its peers: the ingesters' and the reducer's configs in Redis.

The discovery thread reads them every ``config_interval`` (every ``FAST_DISCOVERY`` while a
new scan waits for its ingesters) and posts what changed to the data thread, which owns the
sockets (``IngestersFound``, ``ReducerFound``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from dranspose_fast.protocol import IngesterState, ReducerState
from dranspose_fast.runtime.redis_messages import Keys
from dranspose_fast.worker.parts import Command, IngestersFound, ReducerFound, ServiceCounters

__all__ = ["FAST_DISCOVERY", "Discovery", "read_ingesters", "read_reducer"]

#: Discovery period while waiting for the ingesters to switch to a new scan.
FAST_DISCOVERY = 0.005


class Discovery:
    """The discovery thread's loop (``run``); ``fast`` and ``wake`` come from the data thread."""

    def __init__(self, client: redis.Redis, name: str, post: Callable[[Command], None],
                 counters: ServiceCounters, interval: float, log: logging.Logger) -> None:
        self.client = client
        self.name = name
        self.post = post
        self.counters = counters
        self.interval = interval
        self.log = log
        #: Read every ``FAST_DISCOVERY`` s (a new scan waits for its ingesters).
        self.fast = False
        self._now = threading.Event()

    def wake(self) -> None:
        """Read now (a new scan, or the worker is closing)."""
        self._now.set()

    def run(self, stop: threading.Event) -> None:
        seen: object = None
        reducer_seen: object = None
        while not stop.is_set():
            found, bad = read_ingesters(self.client)
            for message in bad:
                self.counters.bad_configs += 1
                self.log.error("worker %s: ignored a %s", self.name, message)
            key = sorted((n, str(s.url), s.service_uuid, s.mapping_uuid) for n, s in found.items())
            if key != seen:
                seen = key
                self.post(IngestersFound(found))
            reducer, error = read_reducer(self.client)
            if error is not None:
                self.counters.bad_configs += 1
                self.log.error("worker %s: ignored a %s", self.name, error)
            rkey = None if reducer is None else (str(reducer.url), reducer.service_uuid)
            if rkey != reducer_seen:
                reducer_seen = rkey
                self.post(ReducerFound(reducer))
            self._now.wait(FAST_DISCOVERY if self.fast else self.interval)
            self._now.clear()


def read_ingesters(client: redis.Redis) -> tuple[dict[str, IngesterState], list[str]]:
    """Every live ingester's config by name, and one message per config that did not parse."""
    keys = list(client.scan_iter(match=Keys.config_pattern("ingester"), count=1000))
    found: dict[str, IngesterState] = {}
    bad: list[str] = []
    if not keys:
        return found, bad
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            st = IngesterState.model_validate_json(raw)
        except ValueError as exc:
            bad.append(f"malformed config {key!r}: {exc}")
            continue
        found[str(st.name)] = st
    return found, bad


def read_reducer(client: redis.Redis) -> tuple[ReducerState | None, str | None]:
    """The reducer's config (None while there is none), and an error message if it is bad."""
    raw = client.get(Keys.config("reducer", "reducer"))
    if raw is None:
        return None, None
    try:
        return ReducerState.model_validate_json(raw), None
    except ValueError as exc:
        return None, f"malformed reducer config: {exc}"
