"""Stand-ins for the worker's peers, with real Redis and ZeroMQ: the controller (updates,
assignment batches, credits read back), an ingester (a ROUTER with its config key) and the
reducer (a PULL with the reducer's config key). Shared by the worker, reducer and debug
worker tests."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import msgspec
import numpy as np
import redis
import zmq
from pydantic_core import Url

from dranspose_fast.event import StreamData, make_stream_data
from dranspose_fast.protocol import IngesterState, ReducerState
from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.curve import CurveServer, CurveSettings, server_keys
from dranspose_fast.runtime.redis_messages import (
    AssignmentBatch,
    ControllerUpdate,
    CreditMessage,
    Joined,
    Keys,
    credit_decoder,
    encode_control,
)
from dranspose_fast.runtime.usercode import decode_payload
from tests.conftest import wait_for

__all__ = ["FakeIngester", "FakeReducer", "Scans", "assign", "config", "credits",
           "curve_server", "stream", "wait_for"]

class FakeIngester:
    """A ROUTER on a free port plus the ingester config key, as a real ingester has."""

    def __init__(self, client: redis.Redis, name: str, streams: list[str]) -> None:
        self.client = client
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.LINGER, 0)
        self.curve = curve_server(self.ctx, self.router, name)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.state = IngesterState(name=name, url=Url(f"tcp://127.0.0.1:{port}"), streams=streams)
        #: worker name → (routing id, service uuid) of its hellos
        self.hellos: dict[str, tuple[bytes, bytes]] = {}
        self.publish()

    def publish(self, mapping_uuid: uuid.UUID | None = None) -> None:
        if mapping_uuid is not None:
            self.state.mapping_uuid = mapping_uuid
        self.client.set(Keys.config("ingester", self.state.name), self.state.model_dump_json(),
                        px=60_000)

    def poll_hellos(self, timeout: float = 0.0) -> None:
        while self.router.poll(int(timeout * 1000)):
            ident, *frames = self.router.recv_multipart()
            hello = dataplane.decode_hello(frames)
            assert hello is not None, frames
            self.hellos[hello[1]] = (ident, frames[1])
            timeout = 0

    def wait_worker(self, name: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while name not in self.hellos:
            assert time.monotonic() < deadline, f"no hello from {name}"
            self.poll_hellos(0.05)

    def send(self, worker: str, events: list[tuple[int, dict[str, StreamData]]]) -> None:
        self.send_raw(worker, dataplane.encode_events(events))

    def send_raw(self, worker: str, frames: list[Any]) -> None:
        self.wait_worker(worker)
        self.router.send_multipart([self.hellos[worker][0], *frames])

    def close(self) -> None:
        self.client.delete(Keys.config("ingester", self.state.name))
        self.router.close()
        if self.curve is not None:
            self.curve.close()
        self.ctx.term()


def curve_server(ctx: zmq.Context[Any], sock: zmq.Socket[Any], name: str) -> CurveServer | None:
    """CURVE on a fake's server socket with the session's keys, as the real component has."""
    keys = server_keys(CurveSettings())
    if keys is None:
        return None
    server = CurveServer(ctx, keys, name)
    server.secure(sock)
    return server


class FakeReducer:
    def __init__(self, client: redis.Redis, publish: bool = True) -> None:
        self.client = client
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.curve = curve_server(self.ctx, self.pull, "reducer")
        self.port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.state = ReducerState(url=Url(f"tcp://127.0.0.1:{self.port}"))
        if publish:
            self.publish()

    def publish(self) -> None:
        self.client.set(Keys.config("reducer", "reducer"), self.state.model_dump_json(),
                        px=60_000)

    def collect(self, n: int, timeout: float = 10) -> list[tuple[uuid.UUID, str, int, Any]]:
        out: list[tuple[uuid.UUID, str, int, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(out)} of {n} results arrived: {out}"
            if not self.pull.poll(int(left * 1000)):
                continue
            frames = self.pull.recv_multipart()
            assert len(frames) == 5
            worker, phash, results = dataplane.decode_results(frames)
            assert phash is not None
            mapping = uuid.UUID(bytes=frames[4])
            out += [(mapping, worker, evn, decode_payload(p)) for evn, p in results]
        return out

    def close(self) -> None:
        self.pull.close()
        if self.curve is not None:
            self.curve.close()
        self.ctx.term()


def credits(client: redis.Redis, uid: uuid.UUID, worker: str,
            marks: bool = False) -> list[CreditMessage]:
    """``worker``'s credit messages; without ``marks``, their ``service`` and ``done`` left
    out (``test_retention.py`` checks those)."""
    msgs = [credit_decoder.decode(f[b"d"]) for _, f in client.xrange(Keys.credits(uid))]
    return [m if marks else msgspec.structs.replace(m, service="", done={})
            for m in msgs if m.worker == worker]


def config(client: redis.Redis, worker: str) -> dict[str, Any]:
    raw = client.get(Keys.config("worker", worker))
    return json.loads(raw) if raw else {}


def stream(*frames: bytes) -> StreamData:
    return make_stream_data("STINS", list(frames))


def assign(client: redis.Redis, uid: uuid.UUID, first: int, present: list[list[int]],
           masks: list[list[int]], workers: list[str]) -> None:
    batch = AssignmentBatch(first, np.array(present, np.uint8), np.array(masks, np.uint64),
                            workers)
    client.xadd(Keys.assigned(uid), batch.encode())


class Scans:
    """Plays the controller: updates, and waits for every worker's first credits."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.parameters: dict[str, uuid.UUID] = {}

    def update(self, uid: uuid.UUID, streams: list[str], finished: bool = False) -> None:
        upd = ControllerUpdate(mapping_uuid=uid, streams=streams, active_streams=streams,
                               parameters_version=self.parameters, finished=finished)
        self.client.xadd(Keys.UPDATES, {"d": upd.model_dump_json()})

    def start(self, streams: list[str], ingesters: list[FakeIngester],
              workers: list[str]) -> uuid.UUID:
        uid = uuid.uuid4()
        self.update(uid, streams)
        for w in workers:
            wait_for(lambda w=w: config(self.client, w).get("mapping_uuid") == str(uid),
                     what=f"{w} to switch to the scan")
        for ing in ingesters:
            ing.publish(uid)
        for w in workers:
            wait_for(lambda w=w: credits(self.client, uid, w), what=f"first credits of {w}")
        self.join(uid, workers)
        return uid

    def join(self, uid: uuid.UUID, workers: list[str]) -> None:
        """Register the workers' processes with the scan, as the controller does."""
        for w in workers:
            joined = Joined(worker=w, service=config(self.client, w)["service_uuid"])
            self.client.xadd(Keys.assigned(uid), encode_control(joined))

    def set_parameter(self, uid: uuid.UUID, name: str, value: bytes,
                      streams: list[str]) -> None:
        version = uuid.uuid4()
        self.client.set(Keys.parameter(name, str(version)), value)
        self.parameters[name] = version
        self.update(uid, streams)
