"""Write and read dump files with the real dranspose 0.2 (run with the venv's python).

Usage (under the python of ``tests/compat/setup_dr02_venv.sh``):

    python dr02_roundtrip.py write OUT SPEC_JSON   write the records of SPEC_JSON to OUT
    python dr02_roundtrip.py read FILE             print a JSON summary of FILE

OUT decides the writer: ``.cbors``/``.cbor`` go through dranspose 0.2's ingester ``Dumper``,
``.gz`` is that file gzip-compressed, ``.pkls`` is repeated ``pickle.dump`` of 0.2's
``InternalWorkerMessage``.  SPEC_JSON (a file name, or ``-`` for stdin) is a list of records::

    {"event_number": 3, "created_at": "2024-05-01T12:00:00.250000+00:00",  # optional
     "legacy": false,                     # true: 2-element record without created_at
     "streams": {"eiger": {"typ": "STINS",
                           "frames": [{"hex": "00ff"}, {"len": 70000, "seed": 5}]}}}

``read`` loads FILE with 0.2's ``replay.get_internals`` and prints, per record, the event
number, ``created_at`` (isoformat), and per stream the typ and the sha256 / length / Python type
of every frame.  This module imports dranspose only inside the commands, so our own tests can
import ``frame_bytes`` and ``summary`` from it to build the same frames and summaries.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from datetime import datetime
from typing import Any


def frame_bytes(spec: dict[str, Any]) -> bytes:
    """The bytes a frame spec describes: ``{"hex": ...}`` or ``{"len": n, "seed": s}``."""
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    n, seed = int(spec["len"]), int(spec["seed"])
    period = bytes(((i * 7 + seed * 13) ^ (i >> 3)) & 0xFF for i in range(251))
    return (period * (n // len(period) + 1))[:n]


def summary(messages: Any) -> list[dict[str, Any]]:
    """JSON-able summary of InternalWorkerMessage-like objects (0.2's or ours)."""
    out = []
    for msg in messages:
        streams = {}
        for name, data in msg.streams.items():
            frames = []
            for frame in data.frames:
                raw = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
                frames.append(
                    {
                        "sha256": hashlib.sha256(raw).hexdigest(),
                        "len": len(raw),
                        "type": type(frame).__name__,
                    }
                )
            streams[name] = {"typ": data.typ, "frames": frames}
        out.append(
            {
                "event_number": msg.event_number,
                "created_at": msg.created_at.isoformat(),
                "streams": streams,
            }
        )
    return out


def spec_summary(spec: list[dict[str, Any]], big: str = "Frame") -> list[dict[str, Any]]:
    """The summary of the records a spec describes (created_at None when the spec has none).

    ``big`` is the type name expected for frames of 64 KiB and more: ``Frame`` for
    dranspose-fast's reader, ``bytes`` for dranspose 0.2's.
    """
    out = []
    for rec in spec:
        streams = {}
        for name, s in rec["streams"].items():
            frames = []
            for f in s["frames"]:
                raw = frame_bytes(f)
                frames.append(
                    {
                        "sha256": hashlib.sha256(raw).hexdigest(),
                        "len": len(raw),
                        "type": big if len(raw) >= 65536 else "bytes",
                    }
                )
            streams[name] = {"typ": s["typ"], "frames": frames}
        created = rec.get("created_at")
        out.append({"event_number": rec["event_number"], "created_at": created, "streams": streams})
    return out


def _messages(spec: list[dict[str, Any]]) -> list[Any]:
    from dranspose.event import InternalWorkerMessage, StreamData

    msgs = []
    for rec in spec:
        streams = {
            name: StreamData(typ=s["typ"], frames=[frame_bytes(f) for f in s["frames"]])
            for name, s in rec["streams"].items()
        }
        kwargs: dict[str, Any] = {"event_number": rec["event_number"], "streams": streams}
        if rec.get("created_at"):
            kwargs["created_at"] = datetime.fromisoformat(rec["created_at"])
        msgs.append((InternalWorkerMessage(**kwargs), bool(rec.get("legacy"))))
    return msgs


def write(out: str, spec: list[dict[str, Any]]) -> None:
    import cbor2
    from cbor2 import CBORTag
    from dranspose.event import message_encoder
    from dranspose.ingester import Dumper

    msgs = _messages(spec)
    if out.endswith(".pkls"):
        with open(out, "ab") as fh:
            for msg, _ in msgs:
                pickle.dump(msg, fh)
        return
    plain = out[:-3] if out.endswith(".gz") else out
    target = plain
    if out.endswith(".gz"):
        fd, target = tempfile.mkstemp(suffix=".cbors")
        os.close(fd)
        os.unlink(target)
    dumper = Dumper(target)
    for msg, legacy in msgs:
        if legacy:
            # Records from before created_at existed: the same tags, a 2-element array,
            # encoded by 0.2's own encoder hook for the StreamData values.
            item = CBORTag(55799, CBORTag(42877, (msg.event_number, msg.streams)))
            cbor2.dump(item, dumper.fh, default=message_encoder)
        else:
            dumper.write_dump(msg)
    dumper.close()
    if out.endswith(".gz"):
        with open(target, "rb") as src, gzip.open(out, "ab") as dst:
            shutil.copyfileobj(src, dst)
        os.unlink(target)


def read(path: str) -> list[dict[str, Any]]:
    from dranspose.replay import get_internals

    return summary(get_internals(path))


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "write":
        source = sys.stdin if argv[2] == "-" else open(argv[2])
        with source:
            write(argv[1], json.load(source))
        return 0
    if len(argv) == 2 and argv[0] == "read":
        json.dump(read(argv[1]), sys.stdout)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
