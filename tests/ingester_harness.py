"""The ingester tests' stand-ins: the controller (updates and assignment batches in Redis),
the workers (DEALERs that say hello) and STINS sources, on free ports."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import redis
import zmq

from dranspose_fast.event import StreamData
from dranspose_fast.ingester import Ingester
from dranspose_fast.protocol import StreamName
from dranspose_fast.runtime.curve import CurveSettings, client_keys, secure_client
from dranspose_fast.runtime.dataplane import decode_events, encode_hello
from dranspose_fast.runtime.redis_messages import AssignmentBatch, ControllerUpdate, Keys
from tests.conftest import free_port, wait_for
from tests.stins_source import StinsSource

TIMEOUT = 10.0


def as_bytes(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)


class Worker:
    """A DEALER that says hello like a worker and collects the partial events it gets."""

    def __init__(self, ctx: zmq.Context[Any], name: str, url: str) -> None:
        self.name = name
        self.uuid = uuid.uuid4()
        self.sock = ctx.socket(zmq.DEALER)
        secure_client(self.sock, client_keys(CurveSettings()))
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)
        self.hello()
        self.events: list[tuple[int, dict[str, StreamData]]] = []
        self.batches = 0

    def hello(self) -> None:
        self.sock.send_multipart(encode_hello(self.uuid, self.name))

    def receive(self, n: int, timeout: float = TIMEOUT) -> list[tuple[int, dict[str, StreamData]]]:
        """Collect until ``n`` events in all have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise AssertionError(f"{self.name} got {len(self.events)} of {n} events")
            self.events.extend(decode_events(self.sock.recv_multipart(copy=False)))
            self.batches += 1
        return self.events

    def nothing_more(self, wait: float = 0.3) -> bool:
        return not self.sock.poll(int(wait * 1000))


class Harness:
    """Plays the controller; builds ingesters, workers and STINS sources on free ports."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.ingesters: list[Ingester] = []
        self.sources: list[StinsSource] = []

    def settings(self, cls: type[Ingester], streams: Sequence[str], **kw: Any) -> Any:
        return cls.settings_class(
            ingester_streams=list(streams), redis_url=self.redis_url,
            ingester_url=f"tcp://127.0.0.1:{free_port()}", dfast_config_ttl=2.0,
            dfast_config_interval=0.2, build_meta_file=None, **kw)

    def ingester(self, cls: type[Ingester], streams: Sequence[str], **kw: Any) -> Any:
        ing = cls(self.settings(cls, streams, **kw))
        ing.start()
        self.ingesters.append(ing)
        wait_for(lambda: self.config(ing) is not None, what="config key")
        return ing

    def stins(self, **kw: Any) -> StinsSource:
        src = StinsSource(free_port(), **kw)
        self.sources.append(src)
        return src

    def worker(self, name: str, ing: Ingester) -> Worker:
        w = Worker(self.ctx, name, str(ing.state.url))
        wait_for(lambda: any(cw.name == name for cw in ing.state.connected_workers.values()),
                 what=f"hello of {name}")
        return w

    def config(self, ing: Ingester) -> dict[str, Any] | None:
        raw = self.redis.get(Keys.config("ingester", ing.state.name))
        return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]

    def update(self, streams: Sequence[str], uid: uuid.UUID | None = None,
               finished: bool = False, **kw: Any) -> uuid.UUID:
        uid = uid or uuid.uuid4()
        upd = ControllerUpdate(mapping_uuid=uid, streams=[StreamName(s) for s in streams],
                               active_streams=[StreamName(s) for s in streams],
                               finished=finished, **kw)
        self.redis.xadd(Keys.UPDATES, {"d": upd.model_dump_json()}, maxlen=100)
        return uid

    def start_scan(self, streams: Sequence[str], *ings: Ingester, **kw: Any) -> uuid.UUID:
        uid = self.update(streams, **kw)
        for ing in ings:
            wait_for(lambda ing=ing: (self.config(ing) or {}).get("mapping_uuid") == str(uid),
                     what="mapping uuid in config")
        return uid

    def assign(self, uid: uuid.UUID, first: int, cells: list[list[int | None]],
               workers: list[str]) -> None:
        """One batch: ``cells[row][stream]`` is a mask, or None for no frame."""
        present = np.array([[c is not None for c in row] for row in cells], np.uint8)
        masks = np.array([[c or 0 for c in row] for row in cells], np.uint64)
        batch = AssignmentBatch(first, present, masks, workers)
        self.redis.xadd(Keys.assigned(uid), batch.encode())  # type: ignore[arg-type]

    def close(self) -> None:
        for ing in self.ingesters:
            ing.close()
        for src in self.sources:
            src.close()
        self.ctx.destroy(linger=0)
        self.redis.close()


@pytest.fixture
def harness(redis_url: str) -> Iterator[Harness]:
    h = Harness(redis_url)
    try:
        yield h
    finally:
        h.close()


def stins_header(sd: StreamData) -> dict[str, Any]:
    assert sd.typ == "STINS"
    return json.loads(as_bytes(sd.frames[0]))  # type: ignore[no-any-return]


def image_numbers(events: list[tuple[int, dict[str, StreamData]]], stream: str) -> list[Any]:
    out: list[Any] = []
    for _evn, streams in events:
        head = stins_header(streams[stream])
        out.append(head["frame"] if head["htype"] == "image" else head["htype"])
    return out
