"""Run under dranspose 0.2's venv: its own ingester on a live capture, then its replays.

Usage (from the repository root, by tests/test_captures_e2e.py)::

    $DRANSPOSE02_PYTHON tests/compat/dr02_ingest.py --ingester MODULE:CLASS --stream NAME
        --upstream URL --redis URL --dump OUT.cbors [--replay LABEL=DUMP ...] --out RESULT.json

1. Builds 0.2's ingester class (its settings class beside it), gives it a zmq.asyncio context
   and drives its ``run_source(stream)`` generator while the test streams the capture to
   ``--upstream``: every yielded ``StreamData`` becomes event ``i`` (0, 1, ...) in a dump
   written by 0.2's own ``Dumper``, as 0.2's ingester writes them (``get_bytes()`` copies).
   It stops after the series end message (0.2's generator then only drains).
2. Replays 0.2's dump and each ``--replay`` dump with 0.2's ``replay()`` through
   ``tests.compat.proto_classes`` (imported as 0.2 code) and records each reducer ``publish``.

The result file holds ``{"events": n, "publish": {label: publish}}``; 0.2's parsers print to
stdout, so nothing is read from there.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import zmq.asyncio
from dranspose.event import InternalWorkerMessage, StreamData
from dranspose.ingester import Dumper

ROOT = Path(__file__).resolve().parent.parent.parent

WORKER = "tests.compat.proto_classes:ProtoWorker"
REDUCER = "tests.compat.proto_classes:ProtoReducer"


def is_series_end(data: StreamData) -> bool:
    """Whether an event message is its protocol's series end (0.2's models decide)."""
    first = data.frames[0]
    raw = first.bytes if hasattr(first, "bytes") else bytes(first)
    if data.typ == "contrast":  # pickled: 0.2's own parser reads it
        from dranspose.data.contrast import ContrastFinished
        from dranspose.middlewares.contrast import parse

        return isinstance(parse(data), ContrastFinished)
    ends = {
        "xspress": ("xspress3", "XspressPacket", "XspressEnd"),
        "PCAP": ("pcap", "PCAPPacket", "PCAPEnd"),
        "EIGER_LEGACY": ("eiger_legacy", "EigerLegacyPacket", "EigerLegacyEnd"),
        "albaem": ("albaem", "AlbaemPacket", "AlbaemEnd"),
    }
    if data.typ in ends:
        module, adapter, end = ends[data.typ]
    else:
        module, adapter, end = "lecroy", "LecroyPacket", "LecroyEnd"
    mod = importlib.import_module(f"dranspose.data.{module}")
    return isinstance(getattr(mod, adapter).validate_json(raw), getattr(mod, end))


async def ingest(args: argparse.Namespace) -> int:
    module_name, class_name = args.ingester.split(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    settings_cls = getattr(module, class_name.removesuffix("Ingester") + "Settings")
    settings = settings_cls(ingester_streams=[args.stream], upstream_url=args.upstream,
                            redis_url=args.redis, build_meta_file=None)
    ingester = cls(settings=settings)
    ingester.ctx = zmq.asyncio.Context()  # what run() would open; no ROUTER is bound
    source = ingester.run_source(args.stream)
    dumper = Dumper(args.dump)
    count = 0
    try:
        while True:
            timeout = args.timeout if count == 0 else args.idle
            try:
                data = await asyncio.wait_for(anext(source), timeout)
            except TimeoutError:
                raise SystemExit(f"0.2's {class_name} yielded {count} events and then "
                                 f"nothing for {timeout} s (no series end)") from None
            dumper.write_dump(InternalWorkerMessage(event_number=count,
                                                    streams={args.stream: data.get_bytes()}))
            count += 1
            if is_series_end(data):
                break
    finally:
        dumper.close()
        await source.aclose()
        await ingester.stop_source(args.stream)
        ingester.ctx.destroy(linger=0)
        await ingester.redis.aclose()
        await ingester.raw_redis.aclose()
    return count


def replay_publish(dump: str) -> dict[str, Any]:
    import dranspose.replay as rp

    rp.replay(WORKER, REDUCER, [dump], nworkers=2)
    return dict(rp.reducer.publish)


def main() -> None:
    os.environ["PROTO_CLASSES_IMPL"] = "dranspose"  # proto_classes as 0.2 code
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser()
    parser.add_argument("--ingester", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--dump", required=True)
    parser.add_argument("--replay", action="append", default=[])
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    events = asyncio.run(ingest(args))
    publish = {"dr02": replay_publish(args.dump)}
    for spec in args.replay:
        label, _, path = spec.partition("=")
        publish[label] = replay_publish(path)
    Path(args.out).write_text(json.dumps({"events": events, "publish": publish}))


if __name__ == "__main__":
    main()
