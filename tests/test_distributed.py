"""What every component shares (``Service``), against a real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dranspose_fast.protocol import ReducerState
from dranspose_fast.runtime.redis_messages import ControllerUpdate, Keys
from dranspose_fast.runtime.service import Service, stream_id
from dranspose_fast.runtime.settings import DistributedSettings

#: How long a blocked read waits in these tests: far longer than an update needs to arrive.
LONG_BLOCK_MS = 20_000


class SlowToApply(Service):
    """A service whose update thread takes a while to apply each update."""

    role = "probe"

    def __init__(self, settings: DistributedSettings) -> None:
        super().__init__(ReducerState(name="probe", url="tcp://127.0.0.1:1"), settings)
        self.applied: list[uuid.UUID | None] = []

    def on_update(self, update: ControllerUpdate, previous: ControllerUpdate | None) -> None:
        time.sleep(0.3)
        self.applied.append(update.mapping_uuid)


@pytest.fixture
def service(redis_url: str) -> Iterator[SlowToApply]:
    svc = SlowToApply(DistributedSettings(redis_url=redis_url, build_meta_file=None,
                                          dfast_config_interval=0.2))
    svc.start_background()
    try:
        yield svc
    finally:
        svc.close()


def publish_update(client: redis.Redis) -> uuid.UUID:
    uid = uuid.uuid4()
    client.xadd(Keys.UPDATES, {"d": ControllerUpdate(mapping_uuid=uid).model_dump_json()})
    return uid


def test_stream_ids_compare_numerically() -> None:
    assert stream_id(b"1700000000000-10") > stream_id("1700000000000-9")
    assert stream_id(b"0-0") == (0, 0)


def test_a_blocked_read_returns_once_a_new_update_is_applied(
    service: SlowToApply, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    key = "probe:entries"
    client.xadd(key, {"n": b"1"})
    first = service.read_or_update(key, b"0-0", count=10, block_ms=LONG_BLOCK_MS)
    assert [fields for _id, fields in first] == [{b"n": b"1"}]

    # Nothing new on the key: the read blocks until the controller publishes an update, and
    # returns only after on_update has run, so the caller sees the new scan at once.
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(service.read_or_update(
        key, first[-1][0], count=10, block_ms=LONG_BLOCK_MS)))
    reader.start()
    time.sleep(0.2)
    uid = publish_update(client)
    reader.join(LONG_BLOCK_MS / 1000 / 2)
    assert not reader.is_alive(), "the read slept out its whole block despite the update"
    assert got == [[]]
    assert service.applied[-1] == uid

    # Updates already applied do not wake the reader again: new entries on the key do.
    client.xadd(key, {"n": b"2"})
    again = service.read_or_update(key, first[-1][0], count=10, block_ms=LONG_BLOCK_MS)
    assert [fields for _id, fields in again] == [{b"n": b"2"}]
    client.close()
