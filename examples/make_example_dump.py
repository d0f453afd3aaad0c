"""Generate the example recording: a 20 × 20 raster scan with a detector and a position stream.

Writes ``examples/data/eiger.cbors`` and ``examples/data/positions.cbors`` in the dump format of
the ingesters (two ingesters, one file each).  Deterministic: re-running gives the same bytes.

    python examples/make_example_dump.py [--size 20] [--pixels 32] [--out examples/data]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from dranspose_fast.data.stream1 import Stream1Data, Stream1End, Stream1Start
from dranspose_fast.dump import write_dump
from dranspose_fast.event import InternalWorkerMessage, StreamData
from dranspose_fast.protocol import EventNumber, StreamName

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def sample(x: float, y: float) -> float:
    """Fluorescence of the imaginary sample at (x, y): two grains on a weak background."""
    return (1.0 + 6.0 * np.exp(-((x - 6) ** 2 + (y - 12) ** 2) / 8.0)
            + 3.0 * np.exp(-((x - 14) ** 2 + (y - 5) ** 2) / 4.0))


def image(rng: np.random.Generator, strength: float, pixels: int) -> np.ndarray:
    yy, xx = np.mgrid[:pixels, :pixels]
    c = pixels / 2
    spot = 40.0 * strength * np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * (pixels / 10) ** 2))
    return rng.poisson(spot + 2.0).astype(np.uint16)


def message(evn: int, name: str, data: StreamData) -> InternalWorkerMessage:
    return InternalWorkerMessage(
        event_number=EventNumber(evn), streams={StreamName(name): data},
        created_at=T0 + timedelta(milliseconds=evn),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20, help="scan points per axis")
    parser.add_argument("--pixels", type=int, default=32, help="detector pixels per axis")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    rng = np.random.default_rng(20261124)
    n = args.size * args.size
    eiger = [message(0, "eiger", Stream1Start(msg_number=0, filename="raster.h5")
                     .to_stream_data())]
    positions = [message(0, "positions", StreamData(
        typ="JSON", frames=[json.dumps({"status": "started", "points": n}).encode()]))]
    for i in range(n):
        y, x = divmod(i, args.size)
        if y % 2:
            x = args.size - 1 - x  # snake scan
        img = image(rng, sample(x, y), args.pixels)
        eiger.append(message(i + 1, "eiger", Stream1Data(
            msg_number=i + 1, frame=i, shape=list(img.shape), type="uint16",
            compression="none", data=img).to_stream_data()))
        positions.append(message(i + 1, "positions", StreamData(
            typ="JSON", frames=[json.dumps({"x": x, "y": y}).encode()])))
    eiger.append(message(n + 1, "eiger", Stream1End(msg_number=n + 1).to_stream_data()))
    positions.append(message(n + 1, "positions", StreamData(
        typ="JSON", frames=[json.dumps({"status": "finished"}).encode()])))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, messages in (("eiger", eiger), ("positions", positions)):
        path = args.out / f"{name}.cbors"
        path.unlink(missing_ok=True)  # the writer appends, as an ingester does
        write_dump(path, messages)
        print(f"wrote {path} ({path.stat().st_size} bytes, {len(messages)} events)")


if __name__ == "__main__":
    main()
