"""Resume points: what a restarted ingester needs to go on with the scan its previous
process was in (docs/protocol.md, "Ingester resume").

One Redis hash per scan, ``dfast:resume:{uuid}``, written by the data loop:

* ``start:{stream}``: the series start message of the stream (msgpack list of its frames),
  written the moment it arrives. Its presence says the series began: a new process must not
  wait for it again (it was routed as the stream's first row, and the detector sends it once).
* ``pos:{stream}``: messages of the stream handed to routing, saved every quarter second
  (0 at once for a protocol without series start). Only protocols without frame numbers use
  it, as the best position known.

A new process reads the hash when it joins the scan and calls ``UpstreamSource.resume`` on
every stream found in it; the first message it receives then fixes the position and the rows
before it are routed as lost placeholders (``sources.LOST``). A Redis error costs only the
ability to resume: it is logged, the data loop goes on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
import redis
import zmq

from dranspose_fast.ingester.sources import OUTSIDE, UpstreamSource
from dranspose_fast.protocol import ResumedStream, StreamName
from dranspose_fast.runtime.redis_messages import Keys

__all__ = ["ResumePoints"]

_frames_encoder = msgspec.msgpack.Encoder()


class ResumePoints:
    """The resume points of the running scan, for this ingester's streams."""

    def __init__(self, client: redis.Redis, log: logging.Logger) -> None:
        self.redis = client
        self.log = log
        self.key: str | None = None
        self.uid: uuid.UUID | None = None
        self._saved: dict[StreamName, int] = {}
        #: Streams this process resumed in the scan ``uid``.
        self.resumed: dict[StreamName, UpstreamSource] = {}

    def join(self, uid: uuid.UUID, sources: Iterable[UpstreamSource],
             generated: list[StreamName]) -> None:
        """Begin the scan ``uid`` on ``sources`` (already ``begin()``-ed): resume the streams
        an earlier process of this ingester had started, note the others' start."""
        self.uid, self.key = uid, Keys.resume(uid)
        self._saved, self.resumed = {}, {}
        srcs = list(sources)
        try:
            found = self.redis.hgetall(self.key)
            raw = {k.decode(): v for k, v in found.items()}  # type: ignore[union-attr]
        except redis.RedisError as exc:
            self.log.error("scan %s: cannot read the resume points (%s); the streams start "
                           "from their beginning", uid, exc)
            raw = {}
        for src in srcs:
            src.on_start = self.started
            pos = raw.get(f"pos:{src.stream}")
            if f"start:{src.stream}" in raw or pos is not None:
                saved = int(pos) if pos is not None else 0
                src.resume(saved)
                self._saved[src.stream] = saved
                self.resumed[src.stream] = src
                self.log.warning("scan %s: stream %s resumes after a restart of this ingester",
                                 uid, src.stream)
            elif not src.series:
                self._write({f"pos:{src.stream}": 0})
        if raw and generated:
            self.log.error("scan %s: streams %s come from run_source, which cannot resume: "
                           "they start again from their first event", uid, generated)

    def started(self, src: UpstreamSource, frames: list[Any]) -> None:
        """The series start of ``src`` arrived: record it (``UpstreamSource.on_start``)."""
        blob = _frames_encoder.encode(
            [f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in frames])
        self._write({f"start:{src.stream}": blob, f"pos:{src.stream}": 0})

    def save(self, sources: Iterable[UpstreamSource]) -> None:
        """Save the positions that moved (called from the data loop's chores)."""
        moved = {src.stream: src.position for src in sources
                 if src.phase != OUTSIDE and src.resume_from is None
                 and self._saved.get(src.stream) != src.position}
        if moved and self._write({f"pos:{s}": n for s, n in moved.items()}):
            self._saved.update(moved)

    def report(self) -> dict[StreamName, ResumedStream]:
        """The resumed streams whose position is fixed (for the published state)."""
        if self.uid is None:
            return {}
        return {s: ResumedStream(mapping_uuid=self.uid, skipped=src.skipped,
                                 exact=src.skipped_exact)
                for s, src in self.resumed.items() if src.resume_from is None}

    def _write(self, fields: dict[str, int | bytes]) -> bool:
        if self.key is None:
            return False
        try:
            self.redis.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            return True
        except redis.RedisError as exc:
            self.log.warning("cannot save resume points to %s: %s", self.key, exc)
            return False
