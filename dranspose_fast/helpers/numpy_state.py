"""numpy dtypes, arrays and scalars rebuilt from their pickled parts, checked
(``helpers.safe_pickle`` resolves numpy's names in a pickle to what is here).

numpy's own ``dtype.__setstate__`` takes the flags and field offsets a pickle states, and a
forged state makes numpy read object pointers out of raw bytes (or crash at once). So:

* ``numpy.dtype(code, align, copy)`` becomes a ``PendingDtype``; its pickled state (BUILD)
  is parsed here and the dtype made by numpy's checked constructors from the type code,
  fields, offsets, subarray and datetime unit it states; its flags are numpy's;
* ``_reconstruct(ndarray, shape, code)`` becomes a ``PendingArray``, built when its state
  comes with a dtype built so (object arrays only from a list);
* ``_frombuffer`` and ``scalar`` take only dtypes built so (never object ones from bytes);
* ``numpy.ndarray`` resolves to ``NDARRAY``, the type argument of ``_reconstruct`` and
  nothing else: called, ``ndarray(shape, "O", buffer)`` reads pointers from the buffer.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Final, cast

import numpy as np

from dranspose_fast.errors import DecodeError

__all__: list[str] = []  # the unpickler's parts (helpers.safe_pickle), not the user's


class NumpyStateError(DecodeError):
    """A pickled numpy object numpy would not build itself (``safe_pickle`` reports it as an
    ``UnsafePickleError``)."""


#: numpy's scalar reconstructor (``numpy._core`` in numpy 2, ``numpy.core`` in numpy 1).
_np_scalar: Any = importlib.import_module(
    "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2
    else "numpy.core.multiarray").scalar


class _NdarrayName:
    """What ``numpy.ndarray`` resolves to: the type argument of ``_reconstruct``, nothing else
    (called, ``ndarray(shape, "O", buffer)`` reads object pointers from the buffer)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NumpyStateError("numpy.ndarray may only be named as the type of a "
                              "reconstructed array; refused")


NDARRAY: Final = _NdarrayName()

#: ``numpy.dtype``'s type codes a pickle may name (numpy's own pickles name these).
_TYPECODE = re.compile(r"^[?bBhHiIlLqQpPefdgFDGbiufcSUVOMm][0-9]*$")
_BYTEORDERS: Final = frozenset({"<", ">", "|", "="})
_NPY_ALIGNED_STRUCT: Final = 0x80  # numpy's descriptor flag of an aligned struct
_dtype_cache: dict[Any, np.dtype[Any]] = {}
_EMPTY: Final = np.empty(0, np.int8)


class PendingDtype:
    """``numpy.dtype(code, align, copy)`` as a pickle names it, built once its state comes."""

    __slots__ = ("args", "value")

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.value: np.dtype[Any] | None = None

    def __setstate__(self, state: Any) -> None:
        if self.value is not None:
            raise NumpyStateError("numpy dtype state set twice; refused")
        self.value = _build_dtype(self.args, state)


class PendingArray:
    """``_reconstruct(ndarray, shape, code)`` as a pickle names it, built once its state
    comes."""

    __slots__ = ("args", "value")

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.value: np.ndarray[Any, Any] | None = None

    def __setstate__(self, state: Any) -> None:
        if self.value is not None:
            raise NumpyStateError("numpy array state set twice; refused")
        self.value = _build_array(self.args, state)


Pending = PendingDtype | PendingArray
PENDING: Final = (PendingDtype, PendingArray)


def _dtype_of(obj: Any) -> np.dtype[Any]:
    if type(obj) is PendingDtype and obj.value is not None:
        return obj.value
    if isinstance(obj, np.dtype):
        return obj  # swapped in by _Slow: built here (BUILD on a real dtype is refused)
    raise NumpyStateError(f"expected a numpy dtype built from its pickled state, got "
                            f"{type(obj).__name__}")


def built(obj: Any) -> Any:
    """What a pending object built (refused if its state never came)."""
    if obj.value is None:
        raise NumpyStateError("a numpy dtype or array without its state; refused")
    return obj.value


def _build_dtype(args: tuple[Any, ...], state: Any) -> np.dtype[Any]:
    """A dtype from ``numpy.dtype(code, align, copy)`` and its pickled state, made by numpy's
    checked constructors (never ``dtype.__setstate__``); flags are numpy's, not the pickle's."""
    # Only dtypes without fields or subarrays are cached: the others name pending dtypes.
    simple = type(state) is tuple and len(state) > 3 and state[2] is None and state[3] is None
    key: Any = None
    if simple:
        try:
            key = (args, state)
            hash(key)
        except TypeError:
            key = None
    found = _dtype_cache.get(key) if key is not None else None
    if found is not None:
        return found
    try:
        out = _make_dtype(args, state)
    except NumpyStateError:
        raise
    except Exception as exc:
        raise NumpyStateError(f"not a valid numpy dtype state: {type(exc).__name__}: "
                                f"{exc}") from None
    if key is not None and len(_dtype_cache) < 4096:
        _dtype_cache[key] = out
    return out


def _make_dtype(args: tuple[Any, ...], state: Any) -> np.dtype[Any]:
    code = args[0] if args else None
    if type(code) is not str or not _TYPECODE.match(code) or len(args) > 3:
        raise NumpyStateError(f"numpy dtype {code!r} is not a plain type code; refused")
    if type(state) is not tuple or (state[:1], len(state)) not in (((3,), 8), ((4,), 9)):
        raise NumpyStateError("numpy dtype state is not version 3 or 4; refused")
    order, sub, names, fields, elsize, _align, flags = state[1:8]
    metadata = state[8] if len(state) == 9 else None
    if order not in _BYTEORDERS or type(elsize) is not int or type(flags) is not int:
        raise NumpyStateError("numpy dtype state has a bad byte order or size; refused")
    if sub is not None:
        base, shape = sub
        out = np.dtype((_dtype_of(base), tuple(int(n) for n in shape)))
    elif names is not None:
        spec: dict[str, Any] = {"names": [], "formats": [], "offsets": [], "titles": []}
        for name in names:
            entry = fields[name]
            spec["names"].append(str(name))
            spec["formats"].append(_dtype_of(entry[0]))
            spec["offsets"].append(int(entry[1]))
            spec["titles"].append(entry[2] if len(entry) == 3 else None)
        spec["itemsize"] = elsize
        if not any(spec["titles"]):
            del spec["titles"]
        out = np.dtype(cast(Any, spec), align=bool(flags & _NPY_ALIGNED_STRUCT))
    else:
        text = code if order in "|=" else order + code
        if code[0] in "Mm" and type(metadata) is tuple:  # (metadata, (unit, count, 1, 1))
            unit, count = metadata[1][0], int(metadata[1][1])
            text += f"[{count}{bytes(unit).decode('ascii')}]"
            metadata = metadata[0]
        out = np.dtype(text)
        if elsize not in (-1, out.itemsize):
            raise NumpyStateError(f"numpy dtype {text} of {elsize} bytes; refused")
    if isinstance(metadata, dict) and metadata:
        out = np.dtype(out, metadata=dict(metadata))
    return out


def frombuffer(buf: Any, dtype: Any, shape: Any, order: str,
                axis_order: Any = None) -> np.ndarray[Any, Any]:
    """numpy's ``_frombuffer`` (protocol 5 arrays) with a dtype built here."""
    dt = _dtype_of(dtype)
    if dt.hasobject:
        raise NumpyStateError("a numpy object array cannot come from a buffer; refused")
    array: Any = np.frombuffer(buf, dtype=dt)
    if order == "K" and axis_order is not None:
        array = array.reshape(shape, order="C").transpose(tuple(int(a) for a in axis_order))
    else:
        array = array.reshape(shape, order=order)
    out: np.ndarray[Any, Any] = array
    return out


def scalar(dtype: Any, obj: Any = None) -> Any:
    """numpy's ``scalar`` with a dtype built here, from bytes only."""
    dt = _dtype_of(dtype)
    if dt.hasobject:
        if dt.kind == "O" and dt.fields is None:
            return obj  # numpy pickles an object scalar as the object itself
        raise NumpyStateError("a numpy scalar with object fields; refused")
    if obj is not None and type(obj) is not bytes:
        raise NumpyStateError("a numpy scalar from anything but bytes; refused")
    return _np_scalar(dt, obj) if obj is not None else _np_scalar(dt)


def _build_array(args: tuple[Any, ...], state: Any) -> np.ndarray[Any, Any]:
    """``_reconstruct(ndarray, shape, code)`` then its state, with a dtype built here."""
    if not args or args[0] is not NDARRAY:
        raise NumpyStateError("only numpy.ndarray itself can be reconstructed; refused")
    if type(state) is tuple and len(state) == 4:
        state = (1, *state)
    if type(state) is not tuple or len(state) != 5:
        raise NumpyStateError("numpy array state is not (version, shape, dtype, fortran, "
                                "data); refused")
    version, shape, dtype, fortran, data = state
    dt = _dtype_of(dtype)
    if dt.hasobject:
        if type(data) is not list:
            raise NumpyStateError("numpy object array data is not a list; refused")
        data = [built(x) if type(x) in PENDING else x for x in data]
    elif type(data) is not bytes and type(data) is not bytearray:
        raise NumpyStateError("numpy array data is not bytes; refused")
    array = _EMPTY.copy()
    # numpy checks the rest: shape a tuple of sizes, data as long as shape and dtype say
    array.__setstate__((version, shape, dt, fortran, data))
    return array
