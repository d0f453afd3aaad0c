"""Unpickling input from the network and from files without running the code a pickle names.

dranspose 0.2 calls ``pickle.loads`` on worker results, on the pickled parts of detector
protocols (Xspress3 metadata, contrast, LeCroy), on dumps and on parameter files: whoever can
send to a port or hand over a file runs code in the process. Here every one of those goes
through ``loads`` / ``load``: one unpickler, one allow-list of exact ``module:qualname``
globals:

* plain data: builtin containers and scalar types, ``collections``' dicts and deque,
  ``datetime``, ``uuid.UUID``, ``copyreg._reconstructor`` (protocol 0/1 objects) and
  ``_codecs.encode`` for latin-1 only (bytes in protocol 2);
* numpy arrays, dtypes and scalars, rebuilt by ``helpers.numpy_state`` (``_frombuffer``,
  ``_reconstruct``, ``scalar`` and ``dtype`` under numpy 1's and 2's module paths): numpy's
  own ``dtype.__setstate__`` trusts a forged state, so dtypes are built from their state
  through numpy's checked constructors and arrays get only dtypes built so;
  ``numpy.ndarray`` may only be named as the type of a reconstructed array, never called;
* the classes a caller adds (``AllowList``), e.g. the result classes users name in
  ``DFAST_RESULT_CLASSES``: classes only, each ``module:Name`` without dots in the name.

No other function is reachable and no attribute path is resolved, so a pickle can only
build data. What an allowed class's constructor or ``__setstate__`` does with the data is the
class's business: name only your own data classes.

Arrays in a pickle become placeholders first (``numpy_state.Pending``) that are swapped for
the arrays built from them: by numpy's functions where a pickle passes them (protocol 5's
``_frombuffer`` for every array: no swap left), else by a walk of the result's containers,
else, when the walk cannot reach one, by a second, pure-Python unpickling that swaps them on
its stack (slow, rare: arrays in objects with ``__slots__``, say).
"""

from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import datetime
import importlib
import io
import pickle
import re
import sys
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import numpy as np

from dranspose_fast.errors import DecodeError, DransposeFastError
from dranspose_fast.helpers.numpy_state import (
    NDARRAY,
    PENDING,
    NumpyStateError,
    Pending,
    PendingArray,
    PendingDtype,
    built,
    frombuffer,
    scalar,
)

#: The pure-Python unpickler, whose stack and memo ``_Slow`` reaches.
_PyUnpickler: Any = pickle._Unpickler

__all__ = ["PLAIN_DATA", "AllowList", "UnsafePickleError", "allow_list", "load", "loads",
           "parse_class_names"]


class UnsafePickleError(DecodeError):
    """A pickle named a global that is not on the allow-list, or could not be read."""


class _Source(Protocol):
    """A binary file ``load`` reads from (``open(..., "rb")``, ``gzip.open``, ``BytesIO``)."""

    def read(self, size: int = ..., /) -> bytes: ...
    def readline(self, size: int = ..., /) -> bytes: ...
    def tell(self) -> int: ...
    def seek(self, offset: int, whence: int = ..., /) -> int: ...


# === the allow-list ===

#: A ``module:Name`` entry of a setting: dotted module, one identifier (no attribute path).
_ENTRY = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")
_NUMPY_SCALARS: Final[tuple[str, ...]] = (
    "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "longdouble", "complex64", "complex128", "str_", "bytes_",
    "datetime64", "timedelta64",
)
_PLAIN: Final[dict[str, tuple[str, ...]]] = {
    "builtins": ("bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int",
                 "list", "object", "range", "set", "slice", "str", "tuple"),
    "collections": ("Counter", "OrderedDict", "defaultdict", "deque"),
    "datetime": ("date", "datetime", "time", "timedelta", "timezone"),
    "uuid": ("UUID",),
}


#: Placeholders of ``find_class`` for the reconstructors that need the unpickler at hand.
_DTYPE: Final = object()
_RECONSTRUCT: Final = object()


def _latin1(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for ``bytes``: latin-1 text only."""
    if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError("_codecs.encode is allowed for latin-1 text only; refused")
    return text.encode("latin1")


def _base_table() -> dict[tuple[str, str], Any]:
    import builtins

    mods = {"builtins": builtins, "collections": collections, "datetime": datetime,
            "uuid": uuid}
    table: dict[tuple[str, str], Any] = {
        (module, name): getattr(mods[module], name)
        for module, names in _PLAIN.items() for name in names
    }
    table[("copyreg", "_reconstructor")] = getattr(copyreg, "_reconstructor")  # noqa: B009
    table[("_codecs", "encode")] = _latin1
    table.update({("numpy", name): getattr(np, name) for name in _NUMPY_SCALARS})
    table[("numpy", "ndarray")] = NDARRAY
    table[("numpy", "dtype")] = _DTYPE
    for core in ("numpy.core", "numpy._core"):  # numpy 1's and 2's paths in pickles
        table[(f"{core}.multiarray", "_reconstruct")] = _RECONSTRUCT
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


class AllowList:
    """The globals a pickle may name: plain data and numpy (always), plus exact extra classes.

    Parameters
    ----------
    classes
        ``{"module:Name": class}``; a key may differ from the class's own path (dranspose
        0.2's ``dranspose.event:StreamData`` read as ours).
    hint
        Appended to the message of a refusal (``"; name it in ..."``): where to allow a
        class.
    """

    __slots__ = ("_extra", "hint", "table")

    def __init__(self, classes: Mapping[str, type] | None = None, hint: str = "") -> None:
        self._extra: dict[tuple[str, str], type] = {}
        for key, cls in (classes or {}).items():
            module, _, name = key.partition(":")
            if not _ENTRY.match(key) or not isinstance(cls, type):
                raise ValueError(f"allow-list entry {key!r}: expected module:Name of a class")
            self._extra[(module, name)] = cls
        self.hint = hint
        #: Every global this list allows, by ``(module, name)``.
        self.table: dict[tuple[str, str], Any] = {**_BASE, **self._extra}

    @property
    def names(self) -> list[str]:
        """The extra entries, ``module:Name``."""
        return [f"{m}:{n}" for m, n in self._extra]

    def extended(self, classes: Mapping[str, type], hint: str | None = None) -> AllowList:
        """This list plus ``classes``."""
        merged = {f"{m}:{n}": c for (m, n), c in self._extra.items()} | dict(classes)
        return AllowList(merged, self.hint if hint is None else hint)


def parse_class_names(value: str | Iterable[str]) -> tuple[str, ...]:
    """The ``module:Name`` entries of a setting (comma-separated text or a list), checked
    for form only (``allow_list`` imports them).

    Raises
    ------
    ValueError
        naming the first entry that is not ``module:Name`` (a dotted name, a function path
        written with dots, an empty entry).
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in (i.strip() for i in items):
        if not item and isinstance(value, str):
            continue
        if not _ENTRY.match(item):
            raise ValueError(f"{item!r} is not module:Name (a class, no dots after the colon)")
        out.append(item)
    return tuple(out)


def allow_list(names: Iterable[str], hint: str = "",
               base: AllowList | None = None) -> AllowList:
    """``base`` (default: plain data) plus the classes ``names`` (``module:Name``), imported
    now.

    Raises
    ------
    ValueError
        in one line, naming the entry: not ``module:Name``, the module cannot be imported,
        no such name, not a class (functions are never allowed), a builtin, a metaclass, or
        a numpy array or dtype subclass (their constructors read raw memory).
    """
    classes: dict[str, type] = {}
    for entry in parse_class_names(list(names)):
        module, _, name = entry.partition(":")
        try:
            obj = getattr(importlib.import_module(module), name)
        except Exception as exc:
            raise ValueError(f"{entry}: cannot import it ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, type):
            raise ValueError(f"{entry}: is a {type(obj).__name__}, not a class; only classes "
                             "can be allowed")
        if module == "builtins" or issubclass(obj, (type, np.ndarray, np.dtype)):
            raise ValueError(f"{entry}: builtins, metaclasses and numpy array or dtype "
                             "subclasses cannot be allowed")
        classes[entry] = obj
    return (base if base is not None else PLAIN_DATA).extended(classes, hint)


# === the unpicklers ===


#: Modules of Python 2's names, which protocol 0-2 pickles of Python 3 still use.
_PY2_MODULES: Final = frozenset(_compat_pickle.IMPORT_MAPPING) | frozenset(
    m for m, _ in _compat_pickle.NAME_MAPPING)


def _find(pending: list[Pending], allowed: AllowList, module: str, name: str) -> Any:
    if module in _PY2_MODULES:
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    found = allowed.table.get((module, name))
    if found is None:
        raise UnsafePickleError(f"pickled {module}.{name} is not plain data and not allowed"
                                f"{allowed.hint}")
    if found is _DTYPE or found is _RECONSTRUCT:
        cls = PendingDtype if found is _DTYPE else PendingArray

        def make(*args: Any) -> Pending:
            made = cls(*args)
            pending.append(made)
            return made

        return make
    return found


class _Fast(pickle.Unpickler):
    pending: list[Pending]
    allowed: AllowList

    def find_class(self, module: str, name: str) -> Any:
        return _find(self.pending, self.allowed, module, name)


class _Memo(dict[int, Any]):
    """The pure-Python unpickler's memo, knowing where each pending object is."""

    def __init__(self) -> None:
        super().__init__()
        self.places: dict[int, list[int]] = {}

    def __setitem__(self, key: int, value: Any) -> None:
        super().__setitem__(key, value)
        if type(value) in PENDING:
            self.places.setdefault(id(value), []).append(key)


class _Slow(_PyUnpickler):  # type: ignore[misc]  # typeshed has no pure-Python unpickler
    """The pure-Python unpickler, swapping pending objects for what they built on its stack
    and in its memo as soon as their state is set."""

    dispatch = dict(_PyUnpickler.dispatch)
    stack: list[Any]
    pending: list[Pending]
    allowed: AllowList
    memo: _Memo

    def find_class(self, module: str, name: str) -> Any:
        return _find(self.pending, self.allowed, module, name)

    def load_build(self) -> None:
        if isinstance(self.stack[-2], (np.dtype, np.ndarray, np.generic)):
            # numpy's own __setstate__ trusts the state: only pending objects take one
            raise UnsafePickleError("a state for a numpy object already built; refused")
        super().load_build()
        inst = self.stack[-1]
        if type(inst) in PENDING:
            self.stack[-1] = inst.value
            for key in self.memo.places.pop(id(inst), ()):
                self.memo[key] = inst.value

    dispatch[pickle.BUILD[0]] = load_build


def _left(pending: list[Pending]) -> bool:
    """Whether a pending object is still referenced outside ``pending`` (the loop variable
    and ``getrefcount``'s argument are the two other references)."""
    for made in pending:
        if sys.getrefcount(made) > 3:
            return True
    return False


class _Unreachable(DransposeFastError):
    """The walk met a container it cannot rebuild."""


#: Types the walk never looks into (numpy arrays built here hold no pending object).
_LEAVES: Final = frozenset({int, float, str, bytes, bool, type(None), complex, np.ndarray})


def _swap(item: Any, seen: dict[int, Any]) -> Any:
    kind = type(item)
    if kind in _LEAVES:
        return item
    if kind in PENDING:
        return built(item)
    return _walk(item, seen)


def _walk(obj: Any, seen: dict[int, Any]) -> Any:
    """``obj`` with every built pending object in it swapped for what it built."""
    done = seen.get(id(obj))
    if done is not None:
        return done
    seen[id(obj)] = obj
    kind = type(obj)
    if isinstance(obj, list) or kind is collections.deque:
        for i, item in enumerate(obj):
            new = _swap(item, seen)
            if new is not item:
                obj[i] = new
    elif isinstance(obj, dict):
        for key, item in obj.items():
            if type(key) in PENDING:
                raise _Unreachable
            new = _swap(item, seen)
            if new is not item:
                obj[key] = new
    elif kind is tuple:
        items = [_swap(item, seen) for item in obj]
        if any(a is not b for a, b in zip(items, obj, strict=True)):
            seen[id(obj)] = tuple(items)
            return seen[id(obj)]
    elif isinstance(obj, (set, frozenset, tuple)):
        if any(type(item) in PENDING for item in obj):
            raise _Unreachable  # a set cannot hold an array; a tuple subclass: the slow way
    elif hasattr(obj, "__dict__"):
        _walk(vars(obj), seen)
    return obj


def _settle(box: list[Any], pending: list[Pending]) -> Any:
    """The result (alone in ``box``) with no pending object left in it; raises
    ``_Unreachable`` if it has one the walk cannot swap."""
    if _left(pending):
        try:
            _walk(box, {})
        except RecursionError:
            raise _Unreachable from None
        if _left(pending):
            raise _Unreachable
    return box.pop()


def _run(make: type[_Fast] | type[_Slow], file: _Source, allowed: AllowList) -> Any:
    up = make(file)
    if make is _Slow:
        up.memo = _Memo()
    pending: list[Pending] = []
    up.pending = pending
    up.allowed = allowed
    box = [up.load()]  # the only reference to the result, so pending ones can be counted
    del up  # its memo holds references to pending objects
    if not pending:  # no numpy dtype or array named: nothing to swap
        return box.pop()
    return _settle(box, pending)


#: The opcodes that name a global (GLOBAL ``c``, INST ``i``, STACK_GLOBAL, EXT1, EXT2, EXT4).
#: A pickle with none of these bytes anywhere holds no callable and no class, so it can only
#: build builtin data: ``pickle.loads`` reads it without the unpickler object (4x faster for
#: a short result such as ``{"event": 17, "value": 1.0}``; data bytes may match: false
#: alarms only take the full path).
_NAMING: Final = re.compile(rb"[ci\x82-\x84\x93]")
#: Pickles up to this long are checked for ``_NAMING`` (longer ones nearly always match).
_SHORT: Final = 2048


def _refuse(exc: Exception) -> UnsafePickleError:
    if isinstance(exc, UnsafePickleError):
        return exc
    if isinstance(exc, NumpyStateError):
        return UnsafePickleError(str(exc))
    return UnsafePickleError(f"not a valid pickle: {type(exc).__name__}: {exc}")


def loads(data: bytes | bytearray | memoryview, allowed: AllowList | None = None) -> Any:
    """Unpickle ``data`` allowing only the globals of ``allowed`` (default: plain data and
    numpy arrays, dtypes and scalars).

    Raises
    ------
    UnsafePickleError
        if the pickle names any other global, states a numpy dtype or array numpy would not
        build itself, or is not a valid pickle; the message names the global.
    """
    allowed = allowed if allowed is not None else PLAIN_DATA
    if len(data) <= _SHORT:
        raw = data if type(data) is bytes else bytes(data)
        if _NAMING.search(raw) is None:  # names no global: data only, the C loads reads it
            try:
                return pickle.loads(raw)
            except Exception as exc:
                raise _refuse(exc) from None
    # Protocol 4 and 5 pickles come in frames the C unpickler reads at once from a BytesIO;
    # older ones (Xspress3's metadata) it reads a line at a time, which a BufferedReader
    # serves without a Python call per line (2x faster there, 10 % slower for frames).
    framed = len(data) > 2 and data[0] == 0x80 and data[1] >= 4
    source = io.BytesIO(data) if framed else io.BufferedReader(io.BytesIO(data))
    try:
        return _run(_Fast, source, allowed)
    except _Unreachable:
        pass
    except Exception as exc:  # truncated or corrupt pickles raise many types
        raise _refuse(exc) from None
    try:
        return _run(_Slow, io.BytesIO(data), allowed)
    except Exception as exc:
        raise _refuse(exc) from None


def load(file: _Source, allowed: AllowList | None = None) -> Any:
    """Read one pickle from a binary ``file`` (seekable), as ``loads``.

    Raises
    ------
    EOFError
        at the end of the file, or inside a truncated pickle.
    UnsafePickleError
        as ``loads``.
    """
    allowed = allowed if allowed is not None else PLAIN_DATA
    start = file.tell()
    try:
        return _run(_Fast, file, allowed)
    except _Unreachable:
        file.seek(start)
    except EOFError:
        raise
    except Exception as exc:
        raise _refuse(exc) from None
    try:
        return _run(_Slow, file, allowed)
    except EOFError:
        raise
    except Exception as exc:
        raise _refuse(exc) from None


_BASE: Final[dict[tuple[str, str], Any]] = _base_table()
#: Plain data and numpy only.
PLAIN_DATA: Final = AllowList()
