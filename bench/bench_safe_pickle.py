"""Cost of reading results as data only: ``dataplane.decode_result`` beside ``pickle.loads``.

The reducer unpickles every result with the restricted unpickler (``helpers.safe_pickle``;
docs/security.md). Payloads as dranspose 0.2 users return them from ``process_event``, pickled
as the worker pickles them (``usercode.encode_payload``, the highest protocol):

* ``scalars``: ``{"event": n, "value": 1.0}`` (``bench/payload02.py``);
* ``small-arrays``: a dict of small numpy arrays and floats (ROI sums, a histogram, a position);
* ``image-slice``: a 64×64 uint16 crop of a larger image (not contiguous);
* ``xspress3-meta``: Xspress3's metadata pickle (protocol 3, numpy's ``_reconstruct``), which
  the same unpickler reads in ``middlewares.xspress``.

Run: ``python -m pytest bench/bench_safe_pickle.py -q --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dranspose_fast.runtime import dataplane
from dranspose_fast.runtime.usercode import encode_payload
from tests.captures import CAPTURES, read_capture

ALLOWED = dataplane.result_classes()
IMAGE = np.arange(512 * 512, dtype=np.uint16).reshape(512, 512)


def _xspress3_meta() -> bytes:
    msgs = read_capture(CAPTURES / "xspress3-dump.cbors")
    return next(bytes(f) for m in msgs for f in m if bytes(f)[:2] == b"\x80\x03")


PAYLOADS: dict[str, bytes] = {
    "scalars": encode_payload({"event": 17, "value": 1.0}),
    "small-arrays": encode_payload({
        "roi": np.arange(16, dtype=np.float64), "hist": np.zeros(64, dtype=np.uint32),
        "sum": 1234.5, "max": np.float64(17.0), "pos": [0.25, -1.5],
        "mask": np.ones((4, 4), dtype=bool)}),
    "image-slice": encode_payload(IMAGE[100:164, 200:264]),
    "xspress3-meta": _xspress3_meta(),
}
DECODERS: dict[str, Callable[[bytes], Any]] = {
    "pickle.loads": pickle.loads,
    "decode_result": lambda data: dataplane.decode_result(data, ALLOWED),
}


@pytest.mark.parametrize("decoder", list(DECODERS))
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_decode(benchmark: Any, payload: str, decoder: str) -> None:
    benchmark.group = f"result {payload}"
    data = PAYLOADS[payload]
    got = benchmark(DECODERS[decoder], data)
    want = pickle.loads(data)
    assert type(got) is type(want) and repr(got) == repr(want)
