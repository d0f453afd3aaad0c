"""Trigger maps: parsing, validation and read-back of the compiled map.

A map says, for every event and stream, which virtual workers get that stream's frame:
``null`` (no frame), ``[]`` (frame consumed and discarded) or a list of
``{"tags": [...], "constraint": int | null}``. Maps are named *parts* plus a *sequence* of part
names; each part is compiled once (``_triggermap.TriggerMap``) and repeated without expansion.
Constraint identity is (part instance in the sequence, constraint): a repeated part gets fresh
constraints each time.

Binding (``BindingEngine``, ``Batch``) lives in ``binding.py``, which reads a map through
``BindableMap``; its rules are in that module and ``docs/mapping.md``.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    Field,
    InstanceOf,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict

from dranspose_fast import _triggermap
from dranspose_fast.errors import MapError
from dranspose_fast.protocol import (
    GENERIC_WORKER,
    StreamName,
    VirtualConstraint,
    VirtualWorker,
    WorkerTag,
)

__all__ = [
    "RESERVED_PART", "MappingSequence", "Name", "SequenceIn", "VirtualWorkerIn", "parse_sequence",
]

RESERVED_PART = "reserved_start_end"
MAX_TAGS = 64
_MAX_CONSTRAINT = 2**63 - 1
_DEFAULT_TAGS = (GENERIC_WORKER,)

Name = Annotated[StrictStr, StringConstraints(min_length=1)]


class VirtualWorkerIn(TypedDict, total=False):
    """One virtual worker as uploaded: ``{"tags": [...], "constraint": int >= 0 | null}``."""

    tags: list[Name]
    constraint: Annotated[StrictInt, Field(ge=0, le=_MAX_CONSTRAINT)] | None


class SequenceIn(BaseModel):
    """Envelope of the sequence form: ``{"parts": {name: part}, "sequence": [name, ...]}``."""

    parts: dict[Name, dict[StrictStr, Any]]
    sequence: list[Name]


_CELL: TypeAdapter[Any] = TypeAdapter(list[VirtualWorkerIn | InstanceOf[VirtualWorker]] | None)
_PART = TypeAdapter(dict[Name, list[Any]])
_NAMES = TypeAdapter(list[Name])


def _why(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(repr(x) if x == "" else str(x) for x in first["loc"])
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return (f"{loc}: " if loc else "") + str(first["msg"]) + more


@dataclass(frozen=True)
class _Part:
    name: str
    streams: tuple[str, ...]
    values: npt.NDArray[np.int64]  # original constraint value of each local id
    n_events: int


class MappingSequence:
    """A validated, compiled trigger map: parts, the sequence of their instances, tags.

    Parameters
    ----------
    parts : mapping
        ``{name: {stream: [cell, ...]}}``; a part may also be wrapped as ``{"mapping": {...}}``
        (the 0.2 read-back and dump form).
    sequence : sequence of str
        Part names in scan order (repetition allowed).
    all_wrap : bool
        Add the broadcast part ``reserved_start_end`` at the front and back (N events become
        N+2). Ignored when ``parts`` already holds that part (a dump is already wrapped).
    closed : bool
        ``False`` keeps the sequence open for ``append`` (reactive scans) until ``close()``.

    Raises
    ------
    MapError
        On any invalid input; the message names the part, stream and event.
    """

    def __init__(self, parts: Mapping[str, Any], sequence: Sequence[str], *,
                 all_wrap: bool = True, closed: bool = True) -> None:
        try:
            env = SequenceIn.model_validate({"parts": parts, "sequence": sequence})
        except ValidationError as err:
            raise MapError(f"malformed sequence: {_why(err)}") from None
        bodies = {name: _unwrap(name, body) for name, body in env.parts.items()}
        self._setup(sorted({s for body in bodies.values() for s in body}))
        for name, body in bodies.items():
            self._parts[name] = self._compile(name, body)
        self._finish(env.sequence, all_wrap and RESERVED_PART not in bodies, closed)

    # === construction ===

    def _setup(self, streams: Sequence[str]) -> None:
        self._streams = tuple(streams)
        self._sidx = {s: i for i, s in enumerate(self._streams)}
        self._tm = _triggermap.TriggerMap(len(self._streams))
        self._tags: list[str] = []
        self._tag_bits: dict[str, int] = {}
        self._tagsets: dict[frozenset[str], None] = {}
        self.tag_version = 0  # bumped when a new tag gets a bit (engines refresh masks)
        self._parts: dict[str, int] = {}
        self._pdata: list[_Part] = []
        self._seq: list[str] = []
        self._json: dict[int, dict[str, list[Any]]] = {}

    def _finish(self, sequence: list[str], wrap: bool, closed: bool) -> None:
        if not sequence and closed:
            raise MapError("the sequence is empty")
        self._wrap = wrap
        self._closed = False
        self._wrap_tagsets = frozenset(self._tagsets)
        if wrap:
            self._parts[RESERVED_PART] = self._compile(RESERVED_PART, self._wrap_cells())
            self._append_names([RESERVED_PART], check=False)
        self.append(sequence)
        if closed:
            self.close()

    @classmethod
    def from_map(cls, mapping: Mapping[str, Any], *, all_wrap: bool = True) -> MappingSequence:
        """Single-map form ``{stream: [cell, ...]}``: one part ``main``, sequence ``[main]``."""
        return cls({"main": mapping}, ["main"], all_wrap=all_wrap)

    @classmethod
    def from_uniform(cls, streams: Iterable[str], n: int, *, all_wrap: bool = True,
                     part: str = "main") -> MappingSequence:
        """Event ``i`` of part ``part`` has constraint ``i`` (tag ``generic``) on every stream.

        Built directly as arrays: no per-event Python objects.
        """
        try:
            names = _NAMES.validate_python(list(streams))
        except (ValidationError, TypeError) as err:
            why = _why(err) if isinstance(err, ValidationError) else str(err)
            raise MapError(f"uniform map: bad stream names: {why}") from None
        if type(n) is not int or n < 0:
            raise MapError(f"uniform map: number of events must be an int >= 0, got {n!r}")
        if not isinstance(part, str) or not part or part == RESERVED_PART:
            raise MapError(f"uniform map: part name {part!r} is empty or reserved")
        self = cls.__new__(cls)
        self._setup(sorted(set(names)))
        S = len(self._streams)
        mask = self._commit_tags([GENERIC_WORKER], {frozenset(_DEFAULT_TAGS): None})
        cons = np.repeat(np.arange(n, dtype=np.int32), S)
        self._parts[part] = self._add(part, self._streams, np.ones(n * S, np.uint8),
                                      np.arange(n * S + 1, dtype=np.int64), cons,
                                      np.full(n * S, mask, np.uint64), n,
                                      np.arange(n, dtype=np.int64))
        self._finish([part], all_wrap, True)
        return self

    @classmethod
    def from_file(cls, path: str | Path, *, all_wrap: bool = True) -> MappingSequence:
        """Read a JSON map file in any accepted form (e.g. a controller dump)."""
        try:
            obj = json.loads(Path(path).read_bytes())
        except OSError as err:
            raise MapError(f"{path}: cannot read map file: {err.strerror}") from None
        except json.JSONDecodeError as err:
            raise MapError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: "
                           f"{err.msg}") from None
        except UnicodeDecodeError as err:
            raise MapError(f"{path}: not UTF-8 text (byte offset {err.start})") from None
        try:
            return parse_sequence(obj, all_wrap=all_wrap)
        except MapError as err:
            raise MapError(f"{path}: {err}") from None

    # === compiling a part ===

    def _compile(self, name: str, body: Mapping[str, Sequence[Any]]) -> int:
        lengths = {s: len(col) for s, col in body.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{s}: {n}" for s, n in lengths.items())
            raise MapError(f"part {name!r}: streams have unequal lengths ({detail})")
        unknown = sorted(set(body) - set(self._sidx))
        if unknown:
            raise MapError(f"part {name!r}: streams {unknown} are not among the map's streams "
                           f"{list(self._streams)} (fixed when the map was created)")
        E = next(iter(lengths.values()), 0)
        S = len(self._streams)
        counts = np.full((E, S), -1, dtype=np.int64)
        tags = list(self._tags)
        bits = dict(self._tag_bits)
        new_sets: dict[frozenset[str], None] = {}
        cache: dict[Any, int] = {}
        cols: dict[int, tuple[array[int], array[int]]] = {}
        for s, col in body.items():
            cons: array[int] = array("q")
            masks: array[int] = array("Q")
            cnt: list[int] = []
            for e, cell in enumerate(col):
                if cell is None:
                    cnt.append(-1)
                    continue
                if type(cell) is not list and type(cell) is not tuple:
                    _bad_cell(name, s, e, cell)
                cnt.append(len(cell))
                for vw in cell:
                    if type(vw) is dict:
                        t = vw.get("tags", _DEFAULT_TAGS)
                        c = vw.get("constraint")
                    elif isinstance(vw, VirtualWorker):
                        t, c = vw.tags, vw.constraint
                    else:
                        _bad_cell(name, s, e, cell)
                    tt = type(t)
                    try:
                        if tt is list or tt is tuple:
                            key: Any = tuple(t)
                        elif tt is set or tt is frozenset:
                            key = frozenset(t)
                        else:
                            _bad_cell(name, s, e, cell)
                        m = cache.get(key)
                    except TypeError:  # unhashable tag
                        _bad_cell(name, s, e, cell)
                    if m is None:
                        if not all(type(x) is str and x for x in key):
                            _bad_cell(name, s, e, cell)
                        m = _tag_mask(frozenset(key), tags, bits, f"part {name!r}, stream {s!r}, "
                                      f"event {e}")
                        new_sets[frozenset(key)] = None
                        cache[key] = m
                    if c is None:
                        cons.append(-1)
                    elif type(c) is int and 0 <= c <= _MAX_CONSTRAINT:
                        cons.append(c)
                    else:
                        _bad_cell(name, s, e, cell)
                    masks.append(m)
            counts[:, self._sidx[s]] = cnt
            cols[self._sidx[s]] = (cons, masks)
        # interleave the per-stream virtual workers into event-major CSR order
        n = np.where(counts >= 0, counts, 0)
        ptr = np.zeros(E * S + 1, dtype=np.int64)
        np.cumsum(n.ravel(), out=ptr[1:])
        raw = np.empty(int(ptr[-1]), dtype=np.int64)
        vmask = np.empty(int(ptr[-1]), dtype=np.uint64)
        starts = ptr[:-1].reshape(E, S)
        for si, (cons, masks) in cols.items():
            k = n[:, si]
            dest = np.repeat(starts[:, si] - np.cumsum(k) + k, k) + np.arange(int(k.sum()))
            raw[dest] = np.frombuffer(cons, dtype=np.int64)
            vmask[dest] = np.frombuffer(masks, dtype=np.uint64)
        # dense local constraint ids in order of first appearance
        is_c = raw >= 0
        uniq, first, inv = np.unique(raw[is_c], return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[order] = np.arange(len(uniq))
        local = np.full(len(raw), -1, dtype=np.int32)
        local[is_c] = rank[inv]
        self._commit_tags(tags, new_sets)
        return self._add(name, tuple(body), (counts >= 0).ravel().astype(np.uint8), ptr,
                         local, vmask, E, uniq[order].astype(np.int64))

    def _commit_tags(self, tags: list[str], new_sets: dict[frozenset[str], None]) -> int:
        for t in tags[len(self._tags):]:
            self._tag_bits[t] = len(self._tags)
            self._tags.append(t)
            self.tag_version += 1
        self._tagsets.update(new_sets)
        return self.tag_mask(tags)

    def _add(self, name: str, streams: tuple[str, ...], kind: npt.NDArray[np.uint8],
             ptr: npt.NDArray[np.int64], cons: npt.NDArray[np.int32],
             masks: npt.NDArray[np.uint64], n_events: int, values: npt.NDArray[np.int64]) -> int:
        idx = self._tm.add_part(kind, ptr, cons, masks, n_events, len(values))
        self._pdata.append(_Part(name, streams, values, n_events))
        return idx

    def _wrap_cells(self) -> dict[str, list[Any]]:
        sets = sorted(self._tagsets, key=lambda ts: (len(ts), sorted(ts)))
        cell = [{"tags": sorted(ts), "constraint": None} for ts in sets]
        return {s: [cell] for s in self._streams}

    # === open sequences ===

    def add_part(self, name: str, cells: Mapping[str, Sequence[Any]]) -> None:
        """Define a new part (streams must be among the map's streams)."""
        if not isinstance(name, str) or not name or name in self._parts or name == RESERVED_PART:
            raise MapError(f"part name {name!r} is empty, reserved or already defined")
        self._parts[name] = self._compile(name, _unwrap(name, cells))

    def part_min_workers(self, name: str) -> int:
        """Largest number of distinct constraints in one event of part ``name``."""
        if name not in self._parts:
            raise MapError(f"unknown part {name!r} (defined: {sorted(self._parts)})")
        return int(self._tm.part_info(self._parts[name])[2])

    def forget_parts(self, names: Iterable[str]) -> None:
        """Undefine parts that no sequence position uses (a refused append takes back its
        definitions; their compiled tables stay, unreachable)."""
        used = set(self._seq)
        for name in names:
            if name in used:
                raise MapError(f"part {name!r} is in the sequence and cannot be forgotten")
            self._parts.pop(name, None)

    def append(self, names: Sequence[str]) -> None:
        """Append part instances to an open sequence."""
        self._append_names(list(names), check=True)

    def _append_names(self, names: list[str], *, check: bool) -> None:
        if self._closed:
            raise MapError("the sequence is closed; nothing can be appended")
        for pos, name in enumerate(names):
            if name not in self._parts or (check and self._wrap and name == RESERVED_PART):
                raise MapError(f"sequence position {pos}: unknown part {name!r} "
                               f"(defined: {sorted(self._parts)})")
        self._tm.append(np.array([self._parts[n] for n in names], dtype=np.int32))
        self._seq.extend(names)

    def close(self) -> None:
        """Finish the sequence (appending the closing broadcast event when wrapped)."""
        if self._closed:
            return
        if self._wrap:
            if frozenset(self._tagsets) != self._wrap_tagsets:
                # parts appended while open used new tag sets: the end event must cover them
                self._parts[RESERVED_PART] = self._compile(RESERVED_PART, self._wrap_cells())
            self._append_names([RESERVED_PART], check=False)
        self._tm.close()
        self._closed = True

    # === queries ===

    @property
    def streams(self) -> tuple[StreamName, ...]:
        """All streams of the map, sorted (the column order of batches)."""
        return tuple(StreamName(s) for s in self._streams)

    @property
    def tags(self) -> tuple[str, ...]:
        """Known tags; tag ``i`` is bit ``i`` of every tag mask."""
        return tuple(self._tags)

    @property
    def sequence(self) -> list[str]:
        return list(self._seq)

    @property
    def part_names(self) -> list[str]:
        return list(self._parts)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def total_events(self) -> int | None:
        """Total events, ``None`` while the sequence is open."""
        return int(self._tm.n_events) if self._closed else None

    @property
    def known_events(self) -> int:
        """Events of all instances appended so far."""
        return int(self._tm.n_events)

    @property
    def compiled(self) -> _triggermap.TriggerMap:
        return self._tm

    def __len__(self) -> int:
        if not self._closed:
            raise MapError("an open sequence has no length yet")
        return int(self._tm.n_events)

    def tag_mask(self, tags: Iterable[str]) -> int:
        """Bit mask of ``tags`` in this map's tag index (unknown tags are ignored)."""
        m = 0
        for t in tags:
            bit = self._tag_bits.get(t)
            if bit is not None:
                m |= 1 << bit
        return m

    @property
    def tag_sets(self) -> list[frozenset[str]]:
        """Every distinct set of tags the map's virtual workers ask for."""
        return list(self._tagsets)

    def min_workers(self) -> int:
        """Largest number of distinct constraints in one event of the sequence."""
        used = np.unique(self._tm.sequence()[0]).tolist()
        return max((self._tm.part_info(p)[2] for p in used), default=0)

    def constraint_value(self, instance: int, local: int) -> int:
        """Constraint number, as written in the map, of constraint ``(instance, local)``."""
        part, _ = self._tm.sequence()
        if not 0 <= instance < len(part):
            raise MapError(f"instance {instance} is not in the sequence")
        values = self._pdata[int(part[instance])].values
        if not 0 <= local < len(values):
            raise MapError(f"instance {instance} has no constraint {local}")
        return int(values[local])

    def locate(self, evn: int) -> tuple[int, str, int]:
        """``(instance, part name, event within the part)`` of event ``evn``."""
        inst, p, le = self._tm.locate(evn)
        return inst, self._pdata[p].name, le

    def get_event_cells(self, evn: int) -> dict[StreamName, list[VirtualWorker] | None]:
        """Cells of event ``evn`` for every stream (constraints as written in the map)."""
        _, p, le = self._tm.locate(evn)
        kind, ptr, cons, masks = self._tm.event_cells(p, le)
        values = self._pdata[p].values
        return {StreamName(s): ([self._vw(int(cons[j]), int(masks[j]), values)
                                 for j in range(ptr[i], ptr[i + 1])] if kind[i] else None)
                for i, s in enumerate(self._streams)}

    def _vw(self, c: int, mask: int, values: npt.NDArray[np.int64]) -> VirtualWorker:
        tags = {WorkerTag(t) for i, t in enumerate(self._tags) if mask >> i & 1}
        con = None if c < 0 else VirtualConstraint(int(values[c]))
        return VirtualWorker.model_construct(tags=tags, constraint=con)

    def expand(self) -> dict[StreamName, list[list[VirtualWorker] | None]]:
        """The whole sequence as one map, ``null`` where a part lacks a stream (small maps)."""
        out: dict[StreamName, list[list[VirtualWorker] | None]] = {s: [] for s in self.streams}
        cache: dict[int, dict[str, list[Any]]] = {}
        for p in self._tm.sequence()[0].tolist():
            if p not in cache:
                cache[p] = self._cells(p, self._streams, json_form=False)
            for s, col in cache[p].items():
                out[StreamName(s)].extend(col)
        return out

    def saved(self) -> dict[str, Any]:
        """Everything needed to build this map again (``from_saved``): a controller that
        takes over a running scan reads it from Redis."""
        return {**self.to_sequence_json(), "closed": self._closed, "wrap": self._wrap}

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any]) -> MappingSequence:
        """The map ``saved()`` described, with the same events, constraints and tags."""
        seq = cls(saved["parts"], saved["sequence"], all_wrap=False,
                  closed=bool(saved["closed"]))
        seq._wrap = bool(saved["wrap"])  # an open sequence still appends the end part
        return seq

    def to_sequence_json(self) -> dict[str, Any]:
        """The 0.2 ``GET /sequence`` shape: ``{"parts": {n: {"mapping": ...}}, "sequence"}``."""
        parts = {}
        for name, p in self._parts.items():
            if p not in self._json:
                self._json[p] = self._cells(p, self._pdata[p].streams, json_form=True)
            parts[name] = {"mapping": self._json[p]}
        return {"parts": parts, "sequence": list(self._seq)}

    def _cells(self, p: int, streams: Sequence[str], *, json_form: bool) -> dict[str, list[Any]]:
        kind_a, ptr_a, cons_a, mask_a = self._tm.part_cells(p)
        kind, ptr = kind_a.tolist(), ptr_a.tolist()
        cons, masks = cons_a.tolist(), mask_a.tolist()
        values = self._pdata[p].values.tolist()
        S = len(self._streams)
        tagl: dict[int, list[str]] = {}
        for m in set(masks):
            tagl[m] = sorted(t for i, t in enumerate(self._tags) if m >> i & 1)

        def vw(j: int) -> Any:
            c = cons[j]
            tags = tagl[masks[j]]
            con = None if c < 0 else values[c]
            if json_form:
                return {"tags": tags.copy(), "constraint": con}
            return VirtualWorker.model_construct(tags={WorkerTag(t) for t in tags},
                                                 constraint=con)

        out: dict[str, list[Any]] = {}
        for s in streams:
            si = self._sidx[s]
            out[s] = [[vw(j) for j in range(ptr[k], ptr[k + 1])] if kind[k] else None
                      for k in range(si, len(kind), S)]
        return out


def _unwrap(name: str, body: Any) -> dict[str, list[Any]]:
    if isinstance(body, Mapping) and set(body) == {"mapping"} and \
            isinstance(body["mapping"], Mapping):
        body = body["mapping"]  # the 0.2 read-back / dump form
    try:
        return _PART.validate_python(body)
    except ValidationError as err:
        raise MapError(f"part {name!r}: malformed part: {_why(err)}") from None


def _bad_cell(part: str, stream: str, event: int, cell: Any) -> NoReturn:
    where = f"part {part!r}, stream {stream!r}, event {event}"
    try:
        _CELL.validate_python(cell)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [x for x in first["loc"] if x != "VirtualWorkerIn" and "[" not in str(x)]
        what = "cell" if not loc else f"virtual worker {loc[0]}" + "".join(
            f".{x}" if isinstance(x, str) else f"[{x}]" for x in loc[1:])
        raise MapError(f"{where}: {what}: {first['msg']} (got {first['input']!r:.60})") from None
    raise MapError(f"{where}: invalid virtual worker in {cell!r:.100}: constraint must be an "
                   "int >= 0 or null, tags non-empty strings")


def _tag_mask(tags: frozenset[str], known: list[str], bits: dict[str, int], where: str) -> int:
    m = 0
    for t in sorted(tags):
        if t not in bits:
            if len(known) >= MAX_TAGS:
                raise MapError(f"{where}: more than {MAX_TAGS} distinct tags (new tag {t!r})")
            bits[t] = len(known)
            known.append(t)
        m |= 1 << bits[t]
    return m


def parse_sequence(obj: Any, *, all_wrap: bool = True, closed: bool = True) -> MappingSequence:
    """Build a map from any accepted form.

    The sequence form is recognised by a ``"parts"`` key holding a mapping (parts may be
    wrapped as ``{"mapping": ...}``); anything else is the single-map form ``{stream: cells}``.
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("parts"), Mapping):
        seq: Any = obj.get("sequence")  # missing: pydantic names it in the error
        return MappingSequence(obj["parts"], seq, all_wrap=all_wrap, closed=closed)
    if not isinstance(obj, Mapping):
        raise MapError(f"a map must be a JSON object, got {type(obj).__name__}")
    return MappingSequence({"main": obj}, ["main"], all_wrap=all_wrap, closed=closed)
