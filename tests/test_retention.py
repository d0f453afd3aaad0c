"""The pieces of retention on their own: the controller's ledger, the ingester's window, the
reducer's duplicate check, the settings' bounds and the event flag."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from dranspose_fast.controller.ledger import Ledger
from dranspose_fast.event import make_event_data, mark_rebound
from dranspose_fast.ingester.retention import Retention
from dranspose_fast.reducer.service import DEDUP_SPAN, SeenEvents
from dranspose_fast.runtime.redis_messages import (
    Joined,
    Rebind,
    Release,
    decode_entry,
    encode_control,
)
from dranspose_fast.runtime.settings import IngesterSettings


def _ev(*events: int) -> np.ndarray:
    return np.array(events, np.int64)


def test_a_done_mark_releases_only_once_the_results_are_reduced() -> None:
    led = Ledger()
    led.deliver("w0", _ev(1, 2, 3, 4), _ev(1, 1, 1, 1))
    led.report("w0", results=3, done={"w0": 4}, reduced=2)
    assert led.release_entry() is None  # 3 results sent, 2 reduced: nothing released yet
    led.settle("w0", 3)
    assert led.release_entry() == Release(below={"w0": 4})
    assert led.keys["w0"].unreleased()[0].tolist() == [4]
    assert led.release_entry() is None


def test_a_lost_workers_key_moves_whole_to_one_target_under_a_new_key() -> None:
    led = Ledger()
    led.deliver("w0", _ev(1, 3, 5), _ev(2, 1, 2))
    led.report("w0", results=0, done={"w0": 2}, reduced=0)
    entry = led.rebind("w0", "w1")
    assert entry == Rebind(key="w0", holder="w0", new_key="w0~1", origin="w0", target="w1",
                           events=[3, 5], counts=[1, 2])
    # the successor's marks release the new key; the lost holder's reports do not
    led.report("w0", results=0, done={"w0~1": 9}, reduced=0)
    assert led.release_entry() in (None, Release(below={"w0": 2}))
    led.report("w1", results=0, done={"w0~1": 5}, reduced=0)
    assert led.release_entry() == Release(below={"w0~1": 5})
    assert led.held_by("w1") == ["w0~1"] and led.unreleased == 1
    # lost again: the origin stays the first worker
    assert led.rebind("w0~1", "w2").new_key == "w0~2"


def test_the_window_keeps_releases_takes_and_blocks() -> None:
    kept = Retention(max_events=4, max_bytes=1 << 20)
    kept.keep("w0", 1, 2, [b"E", b"xx"])
    kept.keep("w0", 3, 2, [b"E", b"yy"])
    assert kept.full() and kept.events == 4 and kept.nbytes == 6
    kept.release("w0", 2)  # the first batch ends at 1: freed; the second ends at 3: kept
    assert not kept.full() and kept.events == 2 and kept.released == 2
    assert [k.frames for k in kept.take("w0")] == [[b"E", b"yy"]]
    assert kept.events == 0 and kept.take("w0") == []
    off = Retention(0, 0)
    off.keep("w0", 1, 1, [b"E"])
    assert not off.enabled and off.events == 0 and not off.full()


def test_the_reducer_takes_one_result_per_event_and_origin() -> None:
    seen = SeenEvents()
    assert seen.add(5) and seen.add(6) and not seen.add(5)
    for evn in range(7, 7 + 2 * DEDUP_SPAN + 2):
        seen.add(evn)
    assert len(seen.events) <= 2 * DEDUP_SPAN + 1  # bounded


def test_control_entries_round_trip_and_bad_ones_are_value_errors() -> None:
    for entry in (Joined(worker="w", service="s"), Release(below={"w": 3}),
                  Rebind(key="w", holder="w", new_key="w~1", origin="w", target="v",
                         events=[1], counts=[1])):
        fields = {k.encode(): v for k, v in encode_control(entry).items()}
        assert decode_entry(fields) == entry
    with pytest.raises(ValueError, match="bad control entry"):
        decode_entry({b"c": b"\x81\xa4type\xa4nope"})


@pytest.mark.parametrize(("events", "size", "message"), [
    ("100", str(1 << 30), "below 256"),
    ("1000000", str(1 << 30), "less than or equal to 131072"),
    ("-1", str(1 << 30), "greater than or equal to 0"),
    ("4096", "1000", "DFAST_RETENTION_BYTES=1000 is below 1 MiB"),
])
def test_invalid_retention_settings_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch,
                                                      events: str, size: str,
                                                      message: str) -> None:
    monkeypatch.setenv("DFAST_RETENTION_EVENTS", events)
    monkeypatch.setenv("DFAST_RETENTION_BYTES", size)
    with pytest.raises(ValidationError, match=message):
        IngesterSettings(ingester_streams=["eiger"])
    monkeypatch.setenv("DFAST_RETENTION_EVENTS", "0")
    assert IngesterSettings(ingester_streams=["eiger"]).retention_events == 0


def test_only_resent_events_carry_their_first_worker() -> None:
    plain, resent = make_event_data(1, {}), make_event_data(2, {})
    mark_rebound(resent, "w0")
    assert plain.rebound_from is None and resent.rebound_from == "w0"
    assert resent.model_dump() == {"event_number": 2, "streams": {}}  # 0.2's fields only
