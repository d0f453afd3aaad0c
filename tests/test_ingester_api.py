"""The ingester's extension API (dranspose 0.2 style): custom ``run_source`` and software
triggers, subclasses of the built-ins, the multipart ingester and the class registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterator

import pytest
import zmq

from dranspose_fast.event import StreamData
from dranspose_fast.ingester import Ingester, IngesterSettings, IsSoftwareTriggered
from dranspose_fast.ingesters import (
    MultipartIngester,
    ZmqPullSingleIngester,
    create_ingester,
    ingester_class,
)
from dranspose_fast.protocol import StreamName
from tests.conftest import free_port
from tests.ingester_harness import (  # noqa: F401 (fixtures)
    Harness,
    as_bytes,
    harness,
    image_numbers,
    wait_for,
)


class CountingIngester(Ingester):
    """0.2-style custom ingester: a counter stream plus a software-triggered stream."""

    stopped: list[str]

    def __init__(self, settings: IngesterSettings | None = None) -> None:
        super().__init__(settings)
        self.stopped = []

    async def run_source(
        self, stream: StreamName
    ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
        if stream == "dummy":
            while True:
                yield IsSoftwareTriggered()
        i = 0
        while True:
            await asyncio.sleep(0)
            if i == 2:
                yield "not stream data"  # type: ignore[misc]  # counted as malformed
            yield StreamData(typ="counter", frames=[str(i).encode()])
            i += 1

    async def stop_source(self, stream: StreamName) -> None:
        self.stopped.append(stream)

    def software_trigger(self) -> Iterator[dict[str, StreamData]]:
        k = 0
        while True:
            yield {"dummy": StreamData(typ="temperature", frames=[f"t{k}".encode()])}
            k += 1


def test_custom_run_source_with_software_trigger(harness: Harness) -> None:
    ing = harness.ingester(CountingIngester, ["cnt", "dummy"])
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["cnt", "dummy"], ing)
    harness.assign(uid, 0, [[1, 1], [1, None], [None, 1], [1, 1], [0, 1]], ["w0"])
    got = w0.receive(5)
    cnt = [as_bytes(s["cnt"].frames[0]) for _e, s in got if "cnt" in s]
    assert cnt == [b"0", b"1", b"2"]  # the third counter item (b"3") was discarded by the map
    dummy = [(e, s["dummy"].typ, as_bytes(s["dummy"].frames[0])) for e, s in got if "dummy" in s]
    # One software_trigger() item per event handled; placeholders get its value.
    assert dummy == [(0, "temperature", b"t0"), (2, "temperature", b"t2"),
                     (3, "temperature", b"t3"), (4, "temperature", b"t4")]
    c = ing.counter_values()
    assert c.malformed == 1 and c.discarded_by_map == 1
    harness.start_scan(["cnt"], ing)  # a new mapping closes the generators
    wait_for(lambda: sorted(ing.stopped) == ["cnt", "dummy"], what="stop_source calls")


def test_subclass_of_builtin_with_its_own_run_source(harness: Harness) -> None:
    src = harness.stins()

    class WithSoftTrigger(ZmqPullSingleIngester):
        async def run_source(
            self, stream: StreamName
        ) -> AsyncGenerator[StreamData | IsSoftwareTriggered, None]:
            if stream == "dummy":
                while True:
                    yield IsSoftwareTriggered
            async for item in super().run_source(stream):
                yield item

        def software_trigger(self) -> Iterator[dict[str, StreamData]]:
            while True:
                yield {"dummy": StreamData(typ="x", frames=[b"sw"])}

    ing = harness.ingester(WithSoftTrigger, ["eiger", "dummy"], upstream_url=src.url)
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["eiger", "dummy"], ing)
    harness.assign(uid, 0, [[1, 1]] * 4, ["w0"])
    src.send_image(50)  # before the header: the generator path skips it too
    src.send_series(2)
    got = w0.receive(4)
    assert image_numbers(got, "eiger") == ["header", 0, 1, "series_end"]
    assert all(as_bytes(s["dummy"].frames[0]) == b"sw" for _e, s in got)
    assert ing.upstream_streams == []  # the generator path, not the fast path


@pytest.mark.parametrize("socket_type", ["PULL", "SUB"])
def test_multipart_ingester(harness: Harness, socket_type: str) -> None:
    port = free_port()
    up = harness.ctx.socket(zmq.PUSH if socket_type == "PULL" else zmq.PUB)
    up.bind(f"tcp://127.0.0.1:{port}")
    ing = harness.ingester(MultipartIngester, ["pcap"], upstream_url=f"tcp://127.0.0.1:{port}",
                           upstream_socket=socket_type, stream_typ="PCAP")
    w0 = harness.worker("w0", ing)
    uid = harness.start_scan(["pcap"], ing)
    harness.assign(uid, 0, [[1], [0], [1]], ["w0"])
    if socket_type == "SUB":
        time.sleep(0.5)  # let the subscription reach the publisher
    messages = [[b"m%d" % i, b"x" * i, b"end"] for i in range(3)]
    for msg in messages:
        up.send_multipart(msg)
    got = w0.receive(2)
    assert [e for e, _ in got] == [0, 2]
    for (_e, streams), msg in zip(got, [messages[0], messages[2]], strict=True):
        assert streams["pcap"].typ == "PCAP"
        assert [as_bytes(f) for f in streams["pcap"].frames] == msg
    harness.update(["pcap"], uid=uid, finished=True)
    wait_for(lambda: ing._scan is not None and ing._scan.finished)
    up.send_multipart([b"late"])
    wait_for(lambda: ing.counter_values().discarded_outside_scan == 1)
    up.close(linger=0)


def test_registry_loads_builtins_and_user_classes(harness: Harness) -> None:
    assert ingester_class("ZmqPullSingleIngester") is ZmqPullSingleIngester
    assert ingester_class("tests.test_ingester_api:CountingIngester") is CountingIngester
    with pytest.raises(ImportError, match="unknown ingester"):
        ingester_class("NoSuchIngester")
    with pytest.raises(ImportError, match="not a subclass"):
        ingester_class("tests.stins_source:StinsSource")
    ing = create_ingester("ZmqPullSingleIngester", ingester_streams=["e"],
                          redis_url=harness.redis_url, upstream_url="tcp://127.0.0.1:1",
                          build_meta_file=None)
    try:
        assert ing.state.name == "e-ingester"
    finally:
        ing.close()
    with pytest.raises(ValueError, match="no upstream"):
        ZmqPullSingleIngester.settings_class(ingester_streams=["e"], redis_url=harness.redis_url)
