"""Cost of h5dict reads (in-process ASGI, no sockets) and of h5dump writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from dranspose_fast.api.h5dict import create_app
from dranspose_fast.api.h5types import make_id
from dranspose_fast.helpers.h5dump import dump

IMAGE = make_id("datasets", ("image",))


def _publish() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    return {
        "image": rng.poisson(3.0, (1000, 1000)).astype(np.float64),
        "image_attrs": {"unit": "counts"},
        "scan": {f"motor{i}": np.linspace(0, 1, 100) for i in range(100)},
        "live": 34,
    }


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    data = _publish()
    with TestClient(create_app(lambda: (data, nullcontext()))) as tc:
        yield tc


@pytest.mark.benchmark(group="h5dict")
def test_value_8mb_raw(benchmark: Any, client: TestClient) -> None:
    headers = {"Accept-Encoding": "identity"}
    rsp = benchmark(client.get, f"/datasets/{IMAGE}/value", headers=headers)
    assert len(rsp.content) == 8_000_000


@pytest.mark.benchmark(group="h5dict")
def test_value_8mb_gzip(benchmark: Any, client: TestClient) -> None:
    headers = {"Accept-Encoding": "gzip"}
    rsp = benchmark(client.get, f"/datasets/{IMAGE}/value", headers=headers)
    assert rsp.headers["content-encoding"] == "gzip"


@pytest.mark.benchmark(group="h5dict")
def test_value_slice(benchmark: Any, client: TestClient) -> None:
    params = {"select": "[100:164,200:264]"}
    rsp = benchmark(client.get, f"/datasets/{IMAGE}/value", params=params)
    assert len(rsp.content) == 64 * 64 * 8


@pytest.mark.benchmark(group="h5dict")
def test_dataset_metadata(benchmark: Any, client: TestClient) -> None:
    rsp = benchmark(client.get, f"/datasets/{IMAGE}", params={"include_attrs": 1})
    assert rsp.json()["shape"]["dims"] == [1000, 1000]


@pytest.mark.benchmark(group="h5dict")
def test_group_100_links(benchmark: Any, client: TestClient) -> None:
    gid = make_id("groups", ("scan",), hsds=True)
    rsp = benchmark(client.get, f"/groups/{gid}", params={"include_links": 1})
    assert len(rsp.json()["links"]) == 100


@pytest.mark.benchmark(group="h5dump")
def test_dump_8mb(benchmark: Any, tmp_path: Path) -> None:
    data = _publish()
    benchmark(dump, data, tmp_path / "bench.h5")
