"""DECTRIS Stream V2 decode cost: ``middlewares.stream2.parse`` beside cbor2 + dectris.compression.

The messages are built by ``tests/stream2_messages.py`` (cbor2 encoder, hdf5plugin's HDF5
filters): one-channel EIGER2 500K images (512 x 1028) of 16 and 32 bits, uncompressed, bslz4 and
lz4; 3-channel 16-bit images; a start message with ``header_detail: all`` (two channels'
flatfields and pixel masks, 8 MiB); an end message.  For each, in the same run and on one thread:

* ``baseline``: ``cbor2.loads(message, tag_hook=...)`` with a hook decoding tag 56500 through
  ``dectris.compression.decompress``, typed arrays through ``np.frombuffer`` and tag 40/1040
  through ``reshape``, as DECTRIS' example client does (``stream_v2/examples/client.py``).  It
  gets the message as ``bytes``, as that client's ``socket.recv()`` returns it (the receive copy
  is not counted against it);
* ``parse``: ``middlewares.stream2.parse(StreamData("STREAM2", [frame]))``, the frame a
  ``zmq.Frame`` received from an inproc PUSH/PULL pair, as workers receive it, fresh for every
  call (``StreamData`` is built outside the timing, as the worker loop hands it over);
* ``decode``: ``dranspose_fast._stream2.decode(frame)`` alone (no model, no checks);
* ``decompress``: ``dectris.compression.decompress`` of the message's compressed channels
  alone, on the same bytes: the floor for compressed images.

Targets (issue "DECTRIS Stream V2"): ``baseline / parse >= 10`` for uncompressed images;
``parse / decompress <= 1.10`` for bslz4 and lz4 images.

The four are timed by `measure`: timeit-like samples (gc off, ``number`` calls each), the
contenders interleaved and their order rotated every repeat, medians per call, and each
ratio the median of the per-repeat ratios (paired samples, taken next to each other); the pytest
benches record those medians and ratios in ``extra_info`` beside pytest-benchmark's own figure
for ``parse``.

Run::

    python -m pytest bench/bench_parse_stream2.py -q --benchmark-only -p no:cacheprovider
    python bench/bench_parse_stream2.py            # the markdown table of bench/README.md
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
import zmq
from dectris.compression import decompress

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from dranspose_fast._stream2 import decode  # noqa: E402
from dranspose_fast.event import StreamData, make_stream_data  # noqa: E402
from dranspose_fast.middlewares.stream2 import parse  # noqa: E402
from tests.stream2_messages import (  # noqa: E402
    EIGER2_500K,
    Compression,
    end_message,
    image_message,
    images,
    start_message,
    typed_array_tag,
)

CONTENDERS = ("baseline", "parse", "decode", "decompress")

# --- the baseline: cbor2 with a tag hook in the manner of DECTRIS' example client -----------

# RFC 8746 typed arrays of the types numpy has (not the clamped 68, not 128-bit floats).
_TYPED: dict[int, np.dtype[Any]] = {
    typed_array_tag(d): np.dtype(d)
    for d in ("u1", "i1", *(f"{o}{k}{n}" for o in "<>" for k in "ui" for n in (2, 4, 8)),
              *(f"{o}f{n}" for o in "<>" for n in (2, 4, 8)))
}


def baseline_hook(decoder: Any, tag: cbor2.CBORTag) -> Any:
    """cbor2 tag hook: 56500 decompressed, typed arrays as numpy, 40/1040 reshaped."""
    number = tag.tag
    if number == 56500:
        algorithm, elem_size, encoded = tag.value
        return decompress(encoded, algorithm, elem_size=elem_size)
    dtype = _TYPED.get(number)
    if dtype is not None:
        return np.frombuffer(tag.value, dtype)
    if number == 40 or number == 1040:
        dims, contents = tag.value
        return contents.reshape(dims, order="F" if number == 1040 else "C")
    return tag


def baseline(message: bytes) -> Any:
    """What a Python client does without us: ``cbor2.loads`` with `baseline_hook`."""
    return cbor2.loads(message, tag_hook=baseline_hook)


# --- the cases ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One message and what its compressed channels are (for the decompressor alone)."""

    name: str
    message: bytes
    compressed: tuple[tuple[str, int, bytes], ...]  # (algorithm, elem_size, bytes) per channel
    array_bytes: int  # bytes of all arrays once decoded


def _compressed_payloads(message: bytes) -> tuple[tuple[str, int, bytes], ...]:
    """The tag 56500 contents of an image message's channels, found by cbor2 without a hook."""
    out = []
    for array in cbor2.loads(message)["data"].values():
        payload = array.value[1].value  # tag 40 [dims, typed array tag (bytes | tag 56500)]
        if isinstance(payload, cbor2.CBORTag):
            algorithm, elem_size, data = payload.value
            out.append((algorithm, elem_size, data))
    return tuple(out)


_ALGORITHMS: tuple[Compression, ...] = ("none", "bslz4", "lz4")
IMAGE_CASES: list[tuple[str, Compression, int]] = [
    (dtype, compression, 1) for dtype in ("<u2", "<u4") for compression in _ALGORITHMS]
IMAGE_CASES += [("<u2", "none", 3), ("<u2", "bslz4", 3)]
CASE_NAMES = [f"image {d[1:]} {c}" + (f" {n}ch" if n > 1 else "") for d, c, n in IMAGE_CASES]
CASE_NAMES += ["start (all, 2ch)", "end"]


@cache
def case(name: str) -> Case:
    """The named case (see `CASE_NAMES`), built once."""
    if name == "end":
        return Case(name, end_message(1), (), 0)
    if name.startswith("start"):
        msg = start_message(1, channels=("threshold_1", "threshold_2"), header_detail="all",
                            number_of_images=1000, user_data={"sample": "lysozyme"})
        # Two flatfields (f4) and two pixel masks (u4) of the image size, the 4096-entry table.
        return Case(name, msg, (), 4 * 4 * EIGER2_500K[0] * EIGER2_500K[1] + 4 * 4096)
    dtype, compression, n = IMAGE_CASES[CASE_NAMES.index(name)]
    channels = [f"threshold_{i + 1}" for i in range(n)]
    data = images(1, EIGER2_500K, dtype, channels, seed=1)[0]
    msg = image_message(1, 0, data, compression=compression)
    return Case(name, msg, _compressed_payloads(msg), sum(a.nbytes for a in data.values()))


# --- received frames ------------------------------------------------------------------------

class Wire:
    """An inproc PUSH/PULL pair: messages come out as ``zmq.Frame``, as a worker receives them."""

    def __init__(self) -> None:
        self._ctx = zmq.Context()
        self._push: zmq.Socket[bytes] = self._ctx.socket(zmq.PUSH)
        self._pull: zmq.Socket[bytes] = self._ctx.socket(zmq.PULL)
        self._push.bind("inproc://stream2-bench")
        self._pull.connect("inproc://stream2-bench")

    def frames(self, message: bytes, n: int) -> list[zmq.Frame]:
        """``n`` fresh frames of the message (pyzmq caches a frame's ``bytes``: never reuse)."""
        out = []
        for _ in range(n):
            self._push.send(message, 0, copy=False)
            out.append(self._pull.recv(0, copy=False))
        return out

    def close(self) -> None:
        """Close both sockets and the context."""
        self._push.close(0)
        self._pull.close(0)
        self._ctx.term()


def _parse(data: StreamData) -> Any:
    return parse(data)


def _decompress_all(payloads: tuple[tuple[str, int, bytes], ...]) -> Any:
    return [decompress(data, algorithm, elem_size=elem_size)
            for algorithm, elem_size, data in payloads]


def _contenders(c: Case, wire: Wire) -> dict[str, tuple[Callable[[Any], Any],
                                                        Callable[[int], list[Any]]]]:
    """name -> (the timed call, a maker of ``n`` fresh arguments for it)."""
    out: dict[str, tuple[Callable[[Any], Any], Callable[[int], list[Any]]]] = {
        "baseline": (baseline, lambda n: [c.message] * n),
        "parse": (_parse, lambda n: [make_stream_data("STREAM2", [f])
                                     for f in wire.frames(c.message, n)]),
        "decode": (decode, lambda n: wire.frames(c.message, n)),
    }
    if c.compressed:
        out["decompress"] = (_decompress_all, lambda n: [c.compressed] * n)
    return out


def check(c: Case, wire: Wire) -> None:
    """Ours and the baseline give the same arrays; uncompressed images are views of the frame."""
    frame = wire.frames(c.message, 1)[0]
    ours, theirs = parse(make_stream_data("STREAM2", [frame])), baseline(c.message)
    assert ours.type == theirs["type"]
    if theirs["type"] == "image":
        data: dict[str, np.ndarray] = ours.data  # type: ignore[union-attr]
        assert data.keys() == theirs["data"].keys()
        for channel, array in data.items():
            assert array.dtype == theirs["data"][channel].dtype
            assert np.array_equal(array, theirs["data"][channel])
            if not c.compressed:
                assert np.shares_memory(array, np.frombuffer(frame.buffer, np.uint8))


def measure(c: Case, wire: Wire, *, repeat: int = 21,
            sample_s: float = 0.002) -> dict[str, list[float]]:
    """Seconds per call of every contender, sampled interleaved in the same run.

    Parameters
    ----------
    c, wire
        The case, and where its frames come from.
    repeat
        Samples per contender; each repeat times every contender once, in an order rotated
        from one repeat to the next (so none always runs right after the same one).
    sample_s
        Aimed length of one sample: ``number`` calls (1..200), from warm-up calls' time.

    Returns
    -------
    dict
        Contender -> its ``repeat`` samples (seconds per call), sample ``r`` of every contender
        taken in repeat ``r``, next to each other in time (see `ratios`).
    """
    contenders = _contenders(c, wire)
    numbers = {}
    for name, (fn, make) in contenders.items():
        once = math.inf
        for arg in make(3):  # the fastest of three calls: the first one warms caches up
            t0 = time.perf_counter()
            fn(arg)
            once = min(once, time.perf_counter() - t0)
        numbers[name] = max(1, min(200, math.ceil(sample_s / once)))
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, make = contenders[name]
            args = make(numbers[name])
            gc_was = gc.isenabled()
            gc.disable()  # as timeit does
            try:
                t0 = time.perf_counter()
                for arg in args:
                    fn(arg)
                elapsed = time.perf_counter() - t0
            finally:
                if gc_was:
                    gc.enable()
            samples[name].append(elapsed / len(args))
            del args
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    """Contender -> median seconds per call."""
    return {name: statistics.median(s) for name, s in samples.items()}


def ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    """``baseline / parse``, ``baseline / decode``, ``parse / decompress`` (if measured).

    Each is the median of the per-repeat ratios: the two samples of a repeat ran next to each
    other, so a burst of other work on the machine mostly hits both (paired comparison).
    """
    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))

    out = {"baseline_over_parse": paired("baseline", "parse"),
           "baseline_over_decode": paired("baseline", "decode")}
    if "decompress" in samples:
        out["parse_over_decompress"] = paired("parse", "decompress")
        out["decode_over_decompress"] = paired("decode", "decompress")
    return out


# --- pytest-benchmark -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    w = Wire()
    yield w
    w.close()


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.benchmark(group="stream2-parse")
def test_parse_stream2(benchmark: Any, wire: Wire, name: str) -> None:
    """``parse`` timed by pytest-benchmark; all four (`measure`) into ``extra_info``."""
    c = case(name)
    check(c, wire)

    def fresh() -> tuple[tuple[StreamData], dict[str, Any]]:
        return (make_stream_data("STREAM2", wire.frames(c.message, 1)),), {}

    benchmark.pedantic(_parse, setup=fresh, rounds=300 if c.array_bytes < 2**22 else 100)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    samples = measure(c, wire, repeat=15)
    med, rat = medians(samples), ratios(samples)
    benchmark.extra_info["message_bytes"] = len(c.message)
    benchmark.extra_info["load_1min"] = round(os.getloadavg()[0], 2)
    for key, value in med.items():
        benchmark.extra_info[f"{key}_median_us"] = round(value * 1e6, 2)
    for key, value in rat.items():
        benchmark.extra_info[key] = round(value, 3)
    print(f"\n{name}: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in med.items())
          + "; " + ", ".join(f"{k} {v:.3f}" for k, v in rat.items()))


# --- script mode: the table for bench/README.md ---------------------------------------------

def _us(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    us = seconds * 1e6
    return f"{us:,.0f} µs" if us >= 100 else f"{us:.1f} µs"


def table(names: Sequence[str], repeat: int) -> str:
    """Measure the cases and lay them out as a markdown table (with the load average)."""
    wire = Wire()
    load0 = os.getloadavg()
    rows = ["| message | size | cbor2 + dectris.compression | `parse` | `_stream2.decode` "
            "| `decompress` alone | baseline / `parse` | `parse` / `decompress` "
            "| `decode` / `decompress` |",
            "|---|---|---|---|---|---|---|---|---|"]
    try:
        for name in names:
            c = case(name)
            check(c, wire)
            samples = measure(c, wire, repeat=repeat)
            m, r = medians(samples), ratios(samples)
            over, dec = r.get("parse_over_decompress"), r.get("decode_over_decompress")
            rows.append(
                f"| {name} | {len(c.message) / 2**20:.2f} MiB | {_us(m['baseline'])} "
                f"| {_us(m['parse'])} | {_us(m['decode'])} | {_us(m.get('decompress'))} "
                f"| {r['baseline_over_parse']:.1f}× "
                f"| {'—' if over is None else f'{over:.3f}'} "
                f"| {'—' if dec is None else f'{dec:.3f}'} |")
            print(rows[-1], file=sys.stderr)
    finally:
        wire.close()
    load1 = os.getloadavg()
    return "\n".join(rows) + (
        f"\n\nload average (1/5/15 min): {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} at start, "
        f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} at end; {os.cpu_count()} cpus; "
        f"medians of {repeat} interleaved samples, ratios paired per repeat")


def main(argv: Sequence[str] | None = None) -> None:
    """``python bench/bench_parse_stream2.py [--repeat N] [--case NAME ...]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=31, help="samples per contender (31)")
    ap.add_argument("--case", action="append", choices=CASE_NAMES,
                    help="only these cases (repeatable; default all)")
    args = ap.parse_args(argv)
    print(table(args.case or CASE_NAMES, args.repeat))


if __name__ == "__main__":
    main()
