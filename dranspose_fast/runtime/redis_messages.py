"""Redis keys and control messages of the distributed runtime (documented in docs/protocol.md).

Control messages that cross a boundary are validated (pydantic for JSON, msgspec structs for
msgpack); assignment batches are a compact binary layout decoded with numpy, per batch.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import UUID4, BaseModel

from dranspose_fast.protocol import HashDigest, ParameterName, StreamName


class Keys:
    """Every Redis key of the runtime (and the SCAN patterns over them): the one place."""

    PREFIX = "dfast"
    LOCK = "dfast:controller:lock"
    UPDATES = "dfast:updates"
    LOGS = "dfast:logs"
    #: Every component's config key, whatever its role.
    ALL_CONFIGS = "dfast:config:*"
    #: The per-scan and per-parameter keys a closing controller deletes.
    SCAN_PATTERNS = (
        "dfast:assigned:*", "dfast:credits:*", "dfast:reduced:*", "dfast:clock:*",
        "dfast:resume:*", "dfast:sequence:*", "dfast:parameter:*", "dfast:parameter_description:*",
    )

    @staticmethod
    def config(role: str, name: str) -> str:
        return f"dfast:config:{role}:{name}"

    @staticmethod
    def config_pattern(role: str) -> str:
        return f"dfast:config:{role}:*"

    @staticmethod
    def description(name: str) -> str:
        return f"dfast:parameter_description:{name}"

    @staticmethod
    def parameter(name: str, uid: str) -> str:
        return f"dfast:parameter:{name}:{uid}"

    @staticmethod
    def assigned(mapping_uuid: object) -> str:
        return f"dfast:assigned:{mapping_uuid}"

    @staticmethod
    def credits(mapping_uuid: object) -> str:
        return f"dfast:credits:{mapping_uuid}"

    @staticmethod
    def reduced(mapping_uuid: object) -> str:
        return f"dfast:reduced:{mapping_uuid}"

    @staticmethod
    def clock(mapping_uuid: object) -> str:
        return f"dfast:clock:{mapping_uuid}"

    @staticmethod
    def resume(mapping_uuid: object) -> str:
        """Hash of the ingesters' resume points (``ingester.resume``)."""
        return f"dfast:resume:{mapping_uuid}"

    @staticmethod
    def sequence(mapping_uuid: object) -> str:
        """The scan's map (``MappingSequence.saved``, JSON), for a controller taking over."""
        return f"dfast:sequence:{mapping_uuid}"

    @staticmethod
    def of_scan(mapping_uuid: object) -> tuple[str, ...]:
        """Every key a scan leaves behind (deleted when it is replaced or taken over)."""
        return (Keys.assigned(mapping_uuid), Keys.credits(mapping_uuid),
                Keys.reduced(mapping_uuid), Keys.clock(mapping_uuid), Keys.resume(mapping_uuid),
                Keys.sequence(mapping_uuid))


class ControllerUpdate(BaseModel):
    """An entry of ``dfast:updates``: the current scan and parameter versions."""

    mapping_uuid: UUID4 | None = None
    parameters_version: dict[ParameterName, UUID4] = {}
    target_parameters_hash: HashDigest | None = None
    streams: list[StreamName] = []
    active_streams: list[StreamName] = []
    finished: bool = False
    reason: str | None = None


class CreditMessage(msgspec.Struct, frozen=True):
    """A worker grants credits and reports its running totals for the scan."""

    worker: str
    granted: int
    processed: int
    results: int
    errors: int = 0
    #: The worker process's service uuid: another one under the same name is a restart.
    service: str = ""
    #: Per delivery key the worker holds (its own name, and keys rebound to it): every
    #: delivery of that key below this event is processed and its result counted in
    #: ``results`` (docs/protocol.md, "Retention and rebinding").
    done: dict[str, int] = msgspec.field(default_factory=dict)
    #: Per stream, events dropped because a restarted ingester lost their frame of it, and
    #: the first of them (``worker.upstream_loss``).
    lost: dict[str, int] = msgspec.field(default_factory=dict)
    lost_first: dict[str, list[int]] = msgspec.field(default_factory=dict)


class ReducedMessage(msgspec.Struct, frozen=True):
    """The reducer's running totals of results reduced per worker for the scan."""

    reduced: dict[str, int]
    errors: int = 0


# === control entries of the assignment stream (field ``c``; batches use ``b`` and ``w``) ===


class Joined(msgspec.Struct, frozen=True, tag="joined"):
    """The controller registered the worker process ``service`` as ``worker``: assignments
    to that name before this entry were for an earlier process of the same name."""

    worker: str
    service: str
    #: Its tags then (a controller taking over the scan registers it with them).
    tags: list[str] = msgspec.field(default_factory=list)


class WorkerLost(msgspec.Struct, frozen=True, tag="lost"):
    """The controller gave up the worker process ``service`` (``worker``): what it reported
    as ``lost_workers[key]`` (``info``, the ``LostWorker`` JSON). Its ``Rebind`` entries, if
    any, follow. Read back only by a controller taking over the scan."""

    worker: str
    key: str
    service: str
    info: str


class Rebind(msgspec.Struct, frozen=True, tag="rebind"):
    """The unreleased deliveries of ``key`` (held by ``holder``, which is gone) continue as
    ``new_key`` on ``target``: ingesters resend them from retention, ``target`` expects them.

    ``origin`` is the worker they were first bound to; ``events`` and ``counts`` (the streams
    of each, over all ingesters) list the deliveries, in event order.
    """

    key: str
    holder: str
    new_key: str
    origin: str
    target: str
    events: list[int]
    counts: list[int]


class Release(msgspec.Struct, frozen=True, tag="release"):
    """Deliveries of each key below the event given are processed and reduced: ingesters
    free what they retained of them."""

    below: dict[str, int]


ControlEntry = Joined | WorkerLost | Rebind | Release


def encode_control(entry: ControlEntry) -> dict[str, bytes]:
    """The fields of an assignment-stream entry holding ``entry``."""
    return {"c": credit_encoder.encode(entry)}


def decode_entry(fields: dict[bytes, bytes]) -> AssignmentBatch | ControlEntry:
    """An assignment-stream entry: a batch or a control entry (``ValueError`` if neither)."""
    control = fields.get(b"c")
    if control is None:
        return AssignmentBatch.decode(fields)
    try:
        return _control_decoder.decode(control)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(f"bad control entry: {exc}") from None


credit_encoder = msgspec.msgpack.Encoder()
_control_decoder = msgspec.msgpack.Decoder(ControlEntry)
credit_decoder = msgspec.msgpack.Decoder(CreditMessage)
reduced_decoder = msgspec.msgpack.Decoder(ReducedMessage)

_BATCH_HEADER = struct.Struct("<qIHH")


@dataclass(frozen=True)
class AssignmentBatch:
    """Events ``first_event .. first_event + count - 1``: per stream presence and worker masks."""

    first_event: int
    present: npt.NDArray[np.uint8]
    masks: npt.NDArray[np.uint64]
    workers: list[str]
    #: Bindings of constraints of more than one event made since the previous batch:
    #: rows (instance, local constraint, slot in ``workers``), field ``k`` (``<i8``).
    bound: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty((0, 3), np.int64))

    @property
    def count(self) -> int:
        return int(self.present.shape[0])

    def encode(self) -> dict[str, bytes]:
        count, nstreams = self.present.shape
        header = _BATCH_HEADER.pack(self.first_event, count, nstreams, 0)
        body = header + np.ascontiguousarray(self.present).tobytes() + np.ascontiguousarray(
            self.masks.astype("<u8", copy=False)).tobytes()
        out = {"b": body, "w": json.dumps(self.workers).encode()}
        if len(self.bound):
            out["k"] = np.ascontiguousarray(self.bound, "<i8").tobytes()
        return out

    @classmethod
    def decode(cls, fields: dict[bytes, bytes]) -> AssignmentBatch:
        body = fields[b"b"]
        if len(body) < _BATCH_HEADER.size:
            raise ValueError(f"assignment batch of {len(body)} bytes is shorter than its header")
        first, count, nstreams, _ = _BATCH_HEADER.unpack_from(body)
        n = count * nstreams
        if len(body) != _BATCH_HEADER.size + 9 * n:
            raise ValueError(
                f"assignment batch of {len(body)} bytes does not hold {count}×{nstreams} cells")
        present = np.frombuffer(body, np.uint8, n, _BATCH_HEADER.size).reshape(count, nstreams)
        masks = np.frombuffer(body, "<u8", n, _BATCH_HEADER.size + n).reshape(count, nstreams)
        workers = json.loads(fields[b"w"])
        raw = fields.get(b"k", b"")
        if len(raw) % 24:
            raise ValueError(f"assignment batch bindings of {len(raw)} bytes are not rows of 3")
        return cls(first, present, masks, workers,
                   np.frombuffer(raw, "<i8").reshape(-1, 3).astype(np.int64))

    @staticmethod
    def slot_names(names: dict[int, str]) -> list[str]:
        """Worker names by slot ("" for a free slot), as ``workers`` expects."""
        return [names.get(i, "") for i in range(max(names, default=-1) + 1)]

    def workers_of(self, row: int, stream: int) -> list[str]:
        mask = int(self.masks[row, stream])
        return [name for w, name in enumerate(self.workers) if mask >> w & 1]
