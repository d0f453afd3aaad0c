"""HDF5-REST descriptions of ``publish`` values for the h5dict partial view.

This module decides, for one Python or numpy value, which HDF5 shape and type the HDF Group REST
API reports for it, whether its value travels as JSON or as raw bytes, and which numpy dtype the
raw bytes are laid out in. It also parses the ``select`` query parameter. It knows nothing about
HTTP; :mod:`dranspose_fast.api.h5dict` turns its exceptions into 400/404 answers.

Type mapping (0.2's, extended where 0.2 answered 404 or sent bytes h5pyd cannot read):

- Python ``int`` → ``H5T_STD_I64LE`` scalar (``H5T_STD_U64LE`` above the int64 range), ``float``
  → ``H5T_IEEE_F64LE``, ``str`` → variable-length UTF-8 string; all three travel as JSON.
- numpy integers and floats of any byte order → ``H5T_STD_{I|U}{bits}{LE|BE}`` and
  ``H5T_IEEE_F{16|32|64}{LE|BE}``; raw bytes in the array's own byte order.
- booleans (Python and numpy) → the h5py convention, an ``H5T_ENUM`` of ``H5T_STD_I8LE`` with
  members ``FALSE = 0`` and ``TRUE = 1``; one byte per element. h5py and h5pyd read it back as
  ``numpy.bool_``.
- structured dtypes → ``H5T_COMPOUND`` (nested and sub-array fields allowed, sub-arrays become
  ``H5T_ARRAY``); raw bytes are sent packed (no padding), which is how HDF5 clients lay them out.
- numpy ``S`` (bytes) → fixed-length ASCII string, raw bytes; numpy ``U`` and ``StringDType``
  (including lists of ``str``) → variable-length UTF-8 strings, JSON.
- anything else (object arrays, complex, datetimes, ragged lists, ``None``) raises
  :class:`UnsupportedValueError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dranspose_fast.errors import DransposeFastError

__all__ = [
    "Collection",
    "Described",
    "ObjectRef",
    "SelectionError",
    "UnknownIdError",
    "UnsupportedValueError",
    "describe",
    "dtype_to_h5",
    "find_digest",
    "is_link_name",
    "jsonable",
    "make_id",
    "parse_id",
    "parse_select",
    "wire_dtype",
]

Collection = Literal["groups", "datasets"]

_INT64_MIN = -(2**63)
_UINT64_END = 2**64
_NATIVE_ORDER = "LE" if sys.byteorder == "little" else "BE"
_BOOL_TYPE: dict[str, Any] = {
    "class": "H5T_ENUM",
    "base": {"class": "H5T_INTEGER", "base": "H5T_STD_I8LE"},
    "members": [{"name": "FALSE", "value": 0}, {"name": "TRUE", "value": 1}],
}
_VLEN_UTF8: dict[str, Any] = {
    "class": "H5T_STRING",
    "length": "H5T_VARIABLE",
    "charSet": "H5T_CSET_UTF8",
    "strPad": "H5T_STR_NULLTERM",
}
_SCALAR_SHAPE: dict[str, Any] = {"class": "H5S_SCALAR"}
_INT_PART = re.compile(r"-?[0-9]+")


class UnsupportedValueError(DransposeFastError, ValueError):
    """A ``publish`` value has no HDF5 representation in the partial view."""


class SelectionError(DransposeFastError, ValueError):
    """A ``select`` query parameter is malformed or does not fit the dataset."""


class UnknownIdError(DransposeFastError, ValueError):
    """An object id is not one this API issues, or names the wrong collection."""


@dataclass(frozen=True, slots=True)
class Described:
    """How one value is presented: HDF5 shape and type JSON, and how its data travels.

    ``array`` is ``None`` for the Python scalars that travel as JSON unchanged; otherwise it is
    the value as a numpy array (``owned`` tells whether it was freshly built from a list, so that
    nobody else can mutate it).
    """

    shape: dict[str, Any]
    type: dict[str, Any]
    as_json: bool
    array: np.ndarray[Any, Any] | None
    owned: bool


def _order(dt: np.dtype[Any]) -> str:
    if dt.byteorder == ">":
        return "BE"
    if dt.byteorder == "<":
        return "LE"
    return _NATIVE_ORDER if dt.byteorder == "=" else "LE"  # "|": one byte, order is moot


def dtype_to_h5(dt: np.dtype[Any], where: str = "value", allow_vlen: bool = True) -> dict[str, Any]:
    """Return the HDF5-REST type JSON of a numpy dtype.

    Parameters
    ----------
    dt
        The dtype to describe.
    where
        Path of the value, used in the error message.
    allow_vlen
        Whether variable-length strings may appear (not inside compound or array types, whose
        data travels as raw bytes).

    Raises
    ------
    UnsupportedValueError
        if the dtype has no HDF5 equivalent here.
    """
    if dt.subdtype is not None:
        base, dims = dt.subdtype
        return {
            "class": "H5T_ARRAY",
            "dims": list(dims),
            "base": dtype_to_h5(base, where, allow_vlen=False),
        }
    if dt.names is not None:
        fields = []
        for name in dt.names:
            field_dt = dt.fields[name][0]  # type: ignore[index]
            fields.append({"name": name, "type": dtype_to_h5(field_dt, where, allow_vlen=False)})
        if not fields:
            raise UnsupportedValueError(f"{where}: structured dtype {dt} has no fields")
        return {"class": "H5T_COMPOUND", "fields": fields}
    kind, size = dt.kind, dt.itemsize
    if kind == "b":
        return _BOOL_TYPE
    if kind in "iu" and size in (1, 2, 4, 8):
        return {"class": "H5T_INTEGER", "base": f"H5T_STD_{kind.upper()}{8 * size}{_order(dt)}"}
    if kind == "f" and size in (2, 4, 8):
        return {"class": "H5T_FLOAT", "base": f"H5T_IEEE_F{8 * size}{_order(dt)}"}
    if kind == "S" and size > 0:
        return {
            "class": "H5T_STRING",
            "length": size,
            "charSet": "H5T_CSET_ASCII",
            "strPad": "H5T_STR_NULLPAD",
        }
    if kind in "UT" and allow_vlen:
        return _VLEN_UTF8
    raise UnsupportedValueError(f"{where}: numpy dtype {dt.str!r} has no HDF5 type in h5dict")


def wire_dtype(dt: np.dtype[Any]) -> np.dtype[Any]:
    """Return the dtype whose C-order bytes an HDF5-REST client expects for ``dt``.

    It is ``dt`` itself except for structured dtypes with padding or reordered offsets, which
    are packed field after field, as HDF5 clients build compound types.
    """
    if dt.subdtype is not None:
        base, dims = dt.subdtype
        packed = wire_dtype(base)
        return dt if packed is base else np.dtype((packed, dims))
    if dt.names is None:
        return dt
    fields = [(name, wire_dtype(dt.fields[name][0])) for name in dt.names]  # type: ignore[index]
    packed = np.dtype(fields)
    return dt if packed == dt else packed


def _shape(arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    if arr.ndim == 0:
        return _SCALAR_SHAPE
    return {"class": "H5S_SIMPLE", "dims": list(arr.shape)}


def describe(obj: Any, where: str = "value") -> Described:
    """Describe one ``publish`` leaf (not a dict) for the partial view.

    Parameters
    ----------
    obj
        The value; lists are converted with :func:`numpy.asarray`, ndarrays are used as they are.
    where
        Path of the value, used in error messages.

    Raises
    ------
    UnsupportedValueError
        if the value cannot be presented as an HDF5 dataset or attribute.
    """
    typ = type(obj)
    if typ is int:
        if _INT64_MIN <= obj < -_INT64_MIN:
            base = "H5T_STD_I64LE"
        elif 0 <= obj < _UINT64_END:
            base = "H5T_STD_U64LE"
        else:
            raise UnsupportedValueError(f"{where}: int {obj} does not fit in 64 bits")
        return Described(_SCALAR_SHAPE, {"class": "H5T_INTEGER", "base": base}, True, None, False)
    if typ is float:
        return Described(
            _SCALAR_SHAPE, {"class": "H5T_FLOAT", "base": "H5T_IEEE_F64LE"}, True, None, False
        )
    if typ is str:
        return Described(_SCALAR_SHAPE, _VLEN_UTF8, True, None, False)
    if isinstance(obj, dict):
        raise UnsupportedValueError(f"{where}: is a group (dict), not a dataset")
    owned = not isinstance(obj, np.ndarray)
    try:
        arr: np.ndarray[Any, Any] = obj if not owned else np.asarray(obj)
    except (ValueError, TypeError) as exc:
        raise UnsupportedValueError(
            f"{where}: {type(obj).__name__} cannot be converted to an array ({exc})"
        ) from None
    if owned and isinstance(obj, (list, tuple)) and len(obj) > 0 and arr.dtype.kind == "U":
        # numpy turns ['a', 1] into ['a', '1']: only lists made of strings are string datasets
        if not all(isinstance(item, str) for item in obj):
            raise UnsupportedValueError(f"{where}: list mixes str with other types")
    owned = owned and isinstance(obj, (list, tuple))  # asarray of a buffer may share its memory
    h5type = dtype_to_h5(arr.dtype, where)
    return Described(_shape(arr), h5type, arr.dtype.kind in "UT", arr, owned)


def jsonable(value: Any) -> Any:
    """Convert ``ndarray.tolist()`` output (tuples, bytes) to plain JSON-able Python values."""
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def parse_select(select: str) -> list[slice]:
    """Parse a ``select`` query parameter with dranspose 0.2 semantics.

    ``[a:b,c:d:e,...]`` gives one slice per dimension; each entry is ``start:stop`` or
    ``start:stop:step`` with integer parts, and a bare ``n`` means ``:n`` (not an index).

    Raises
    ------
    SelectionError
        naming the offending dimension and text if the selection is malformed.
    """
    if len(select) < 3 or select[0] != "[" or select[-1] != "]":
        raise SelectionError(f"select {select!r} must look like [a:b,c:d,...]")
    slices = []
    for dim, entry in enumerate(select[1:-1].split(",")):
        parts = entry.split(":")
        if len(parts) > 3:
            raise SelectionError(f"select {select!r}: dimension {dim} has more than 3 parts")
        for part in parts:
            if not _INT_PART.fullmatch(part):
                raise SelectionError(
                    f"select {select!r}: dimension {dim} part {part!r} is not an integer"
                    " (lists, points and empty parts are not supported)"
                )
        numbers = [int(part) for part in parts]
        if len(numbers) == 3 and numbers[2] == 0:
            raise SelectionError(f"select {select!r}: dimension {dim} has step 0")
        slices.append(slice(*numbers))
    return slices


# === Object ids ===
#
# 0.2 ids are "g-h5dict-<HEX>" / "d-h5dict-<HEX>", HEX the uppercase base16 of the absolute path.
# h5pyd 1.0 (h5json.objid.validateUuid) rejects any id whose part after "g-"/"d-" is not exactly
# 36 characters of [A-Za-z0-9-]. In that "hsds" form short paths are padded with "-" (never a
# base16 digit, so the padding is unambiguous) and longer ones become "h5hash-<29 hex digits>".

_HSDS_TAIL = 36
_PLAIN = "h5dict-"
_HASHED = "h5hash-"
_ATTRS = "_attrs"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A parsed id: its collection, its path (``None`` until a hashed id is resolved)."""

    collection: Collection
    parts: tuple[str, ...] | None
    digest: str
    hsds: bool

    @property
    def path(self) -> str:
        """The absolute path, or the digest for an unresolved hashed id."""
        if self.parts is None:
            return f"<hashed {self.digest}>"
        return "/" + "/".join(self.parts)


class _DigestCache:
    """Bounded map from the digests of issued hashed ids to their paths."""

    def __init__(self, capacity: int = 65536) -> None:
        self._paths: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def put(self, digest: str, parts: tuple[str, ...]) -> None:
        with self._lock:
            self._paths[digest] = parts
            self._paths.move_to_end(digest)
            if len(self._paths) > self._capacity:
                self._paths.popitem(last=False)

    def get(self, digest: str) -> tuple[str, ...] | None:
        with self._lock:
            return self._paths.get(digest)


digests = _DigestCache()


def _digest(parts: tuple[str, ...]) -> str:
    path = "/" + "/".join(parts)
    return hashlib.blake2b(path.encode(), digest_size=15).hexdigest()[: _HSDS_TAIL - len(_HASHED)]


def is_link_name(key: object) -> bool:
    """Whether a ``publish`` key is visible as a link (``<name>_attrs`` and odd keys are not)."""
    return isinstance(key, str) and key != "" and "/" not in key and not key.endswith(_ATTRS)


def make_id(collection: Collection, parts: tuple[str, ...], hsds: bool = False) -> str:
    """Return the id of the group or dataset at path components ``parts``.

    Parameters
    ----------
    collection
        ``"groups"`` or ``"datasets"``.
    parts
        Path components from the root, ``()`` for the root group.
    hsds
        Issue the 36-character form that h5pyd 1.0 accepts instead of the 0.2 form.
    """
    prefix = "g-" if collection == "groups" else "d-"
    tail = _PLAIN + base64.b16encode(("/" + "/".join(parts)).encode()).decode()
    if not hsds:
        return prefix + tail
    if len(tail) <= _HSDS_TAIL:
        return prefix + tail.ljust(_HSDS_TAIL, "-")
    digest = _digest(parts)
    digests.put(digest, parts)
    return prefix + _HASHED + digest


def parse_id(obj_id: str, collection: Collection) -> ObjectRef:
    """Parse an id of any form issued by :func:`make_id`.

    Raises
    ------
    UnknownIdError
        if the id is malformed or names the other collection.
    """
    kind = "group" if collection == "groups" else "dataset"
    if len(obj_id) < 3 or obj_id[1] != "-" or obj_id[0] not in "gd":
        raise UnknownIdError(f"{kind} id {obj_id!r} is not an h5dict id")
    if obj_id[0] != kind[0]:
        other = "dataset" if kind == "group" else "group"
        raise UnknownIdError(f"id {obj_id!r} names a {other}, not a {kind}")
    tail = obj_id[2:]
    if tail.startswith(_HASHED):
        return ObjectRef(collection, None, tail[len(_HASHED) :], True)
    if not tail.startswith(_PLAIN):
        raise UnknownIdError(f"{kind} id {obj_id!r} is not an h5dict id")
    try:
        path = base64.b16decode(tail[len(_PLAIN) :].rstrip("-")).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise UnknownIdError(f"{kind} id {obj_id!r} does not encode a path") from None
    if not path.startswith("/"):
        raise UnknownIdError(f"{kind} id {obj_id!r} encodes {path!r}, not an absolute path")
    parts = tuple(p for p in path.split("/") if p)
    return ObjectRef(collection, parts, "", len(tail) == _HSDS_TAIL)


def find_digest(data: Any, digest: str) -> tuple[str, ...] | None:
    """Walk the dict tree ``data`` for the path whose hashed id has ``digest``."""
    known = digests.get(digest)
    if known is not None:
        return known
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        obj, parts = stack.pop()
        if _digest(parts) == digest:
            digests.put(digest, parts)
            return parts
        if isinstance(obj, dict):
            stack.extend((val, (*parts, key)) for key, val in obj.items() if is_link_name(key))
    return None
