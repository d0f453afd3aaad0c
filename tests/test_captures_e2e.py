"""Real captures as the proof: every recorded protocol, live, dumped and replayed, here and in 0.2.

For each capture of tests/data/captures (sent over real sockets by ``CaptureSender``):

1. live: ``dranspose-fast local`` with our built-in ingester for the protocol (dumping on,
   through the ``dump_prefix`` parameter), two workers and a reducer running
   ``tests.compat.proto_classes`` -> the live publish and OUR dump;
2. dranspose 0.2's own ingester (its ``run_source``, in its venv) on the same capture ->
   0.2's dump (``tests/compat/dr02_ingest.py``);
3. both dumps replayed by 0.2 and by us through the same classes.

All five publishes must be the same: one summary per event of what the protocol's parser
returned (class, fields, arrays by sum and MD5), so the events, their order, their content and
both packages' parsers agree.  The 0.2 venv comes from ``DRANSPOSE02_PYTHON`` (skipped without
it; under ``CI=true`` it is built, and a venv that cannot be built fails these tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.capture_runs import (
    CASES,
    Case,
    LiveEnsemble,
    dump_content,
    first_difference,
    replay_here,
    run_dr02,
)
from tests.compat.dr02 import dr02_python
from tests.conftest import RedisServer


@pytest.fixture(scope="module")
def dr02() -> str:
    return dr02_python()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def live(dr02: str, module_redis: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveEnsemble]:
    """One local ensemble for every case whose modules exist (one start for all of them)."""
    ens = LiveEnsemble(list(CASES), tmp_path_factory.mktemp("live"), module_redis)
    try:
        ens.wait_ready()
        yield ens
    finally:
        code = ens.close()
    assert code == 0, f"local exited with {code}\n{ens.log()}"


@pytest.mark.parametrize("case", CASES, ids=[c.stream for c in CASES])
def test_capture_publishes_the_same_everywhere(case: Case, dr02: str, module_redis: str,
                                               tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    live: LiveEnsemble = request.getfixturevalue("live")

    live_summary, our_dump = live.scan(case)
    dr02_run = run_dr02(dr02, case, tmp_path, module_redis, {"ours": our_dump})
    publishes: dict[str, Any] = {
        "0.2 dump replayed by 0.2": _summary(dr02_run["publish"]["dr02"]),
        "live run (local)": live_summary,
        "our dump replayed by 0.2": _summary(dr02_run["publish"]["ours"]),
        "our dump replayed here": replay_here(our_dump, tmp_path / "ours.h5"),
        "0.2 dump replayed here": replay_here(dr02_run["dump"], tmp_path / "dr02.h5"),
    }

    # 0.2 on its own data is the reference: the whole series, every event parsed
    reference = publishes["0.2 dump replayed by 0.2"]
    assert dr02_run["events"] == case.events
    assert sorted(map(int, reference)) == list(range(case.events))
    for key, results in reference.items():
        assert len(results) == 1, f"event {key}: workers disagree: {results}"
        assert "error" not in results[0]["streams"][case.stream], results[0]
    # the dumps: the same events and typ; the same frames where 0.2 forwards them as received
    # (its PCAP ingester re-serialises each row it splits off, so only the parse compares)
    ours, theirs = dump_content(our_dump), dump_content(dr02_run["dump"])
    assert [(evn, {s: typ for s, (typ, _) in rec.items()}) for evn, rec in ours] == \
        [(evn, {s: typ for s, (typ, _) in rec.items()}) for evn, rec in theirs]
    if case.stream != "pcap":
        for (evn, rec), (_, rec02) in zip(ours, theirs, strict=True):
            assert rec == rec02, f"event {evn}: frames differ from 0.2's dump"

    differ = {name: first_difference(got, reference)
              for name, got in publishes.items() if got != reference}
    assert not differ, "\n".join(f"{name}:\n{why}" for name, why in differ.items())


def _summary(publish: dict[str, Any]) -> Any:
    import json

    assert publish["finished"] == 1, publish
    return json.loads(publish["summary"])
