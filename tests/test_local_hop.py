"""The local hop: workers on the ingester's host dial ``ipc://`` in a private directory.

Real ingesters, a raw DEALER as a worker, and a real scan of worker processes both ways.
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
import zmq

from dranspose_fast.ingester.links import LOCAL_PEER
from dranspose_fast.ingesters import ZmqPullSingleIngester
from dranspose_fast.runtime import dataplane, local_hop
from tests.conftest import wait_for
from tests.ensemble import Ensemble, records_by_event, uniform
from tests.ingester_harness import Harness, harness  # noqa: F401 (the fixture)
from tests.stins_source import StinsSource

pytestmark = pytest.mark.skipif(local_hop.boot_id() is None, reason="no boot id (not Linux)")


def test_the_ingester_offers_a_private_ipc_socket_that_takes_plain_workers(
        harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url)
    url = ing.state.local_url
    assert url is not None and url.startswith("ipc://")
    assert ing.state.host_id == local_hop.boot_id()
    folder = Path(url.removeprefix("ipc://")).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # only the ingester's user enters
    assert harness.config(ing)["local_url"] == url  # what workers read from Redis
    assert local_hop.usable(url, ing.state.host_id)

    worker = harness.ctx.socket(zmq.DEALER)  # no CURVE: the kernel checked who connects
    worker.connect(url)
    worker.send_multipart(dataplane.encode_hello(uuid.uuid4(), "w0"))
    links = ing._links
    assert links is not None
    wait_for(lambda: "w0" in links.routes, what="the hello on the local hop")
    assert links.routes["w0"].key == LOCAL_PEER
    uid = harness.start_scan(["eiger"], ing)
    harness.assign(uid, 0, [[1]] * 3, ["w0"])
    src.send_series(1)
    got: list[int] = []

    def received() -> bool:
        while worker.poll(0):
            got.extend(e for e, _ in dataplane.decode_events(worker.recv_multipart(copy=False)))
        return len(got) == 3
    wait_for(received, what="three events over the local hop")
    worker.close(linger=0)
    ing.close()
    assert not folder.exists()  # the socket's directory goes with the ingester


def test_off_by_setting_and_only_on_the_same_host(harness: Harness) -> None:
    src = harness.stins()
    ing = harness.ingester(ZmqPullSingleIngester, ["eiger"], upstream_url=src.url,
                           dfast_local_hop=False)
    assert ing.state.local_url is None
    on = harness.ingester(ZmqPullSingleIngester, ["eiger2"], upstream_url=src.url)
    assert not local_hop.usable(on.state.local_url, "another-host:1")
    assert not local_hop.usable("ipc:///nonexistent/workers", local_hop.boot_id())
    assert not local_hop.usable(None, local_hop.boot_id())


@pytest.mark.parametrize("hop", ["on", "off"])
def test_a_scan_over_either_hop_loses_nothing(
        ens: Ensemble, source: StinsSource, hop: str) -> None:
    ens.env["DFAST_LOCAL_HOP"] = hop
    ens.controller()
    ens.reducer()
    for name in ("w0", "w1"):
        ens.worker(name)
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], ["w0", "w1"])
    ens.sequence(uniform(["eiger"], 10))
    source.send_series()
    assert ens.wait_finished()["finished"]
    assert sorted(records_by_event(ens.published())) == list(range(12))
    dialled = "at ipc://" if hop == "on" else "at tcp://"
    assert all(f"connected to ingester eiger-ingester {dialled}" in ens.log(w)
               for w in ("w0", "w1")), ens.all_logs()
