"""Loading pickled protocol payloads from the network without running their code.

Several detector protocols pickle part of their messages (Xspress3's metadata arrays,
contrast's scan dicts, LeCroy's timestamps). dranspose 0.2 calls ``pickle.loads`` on them,
which lets anyone who can send to the port run code in the ingester and the workers.
``loads`` here resolves only plain builtins, ``datetime`` and numpy's array and scalar
reconstruction; any other class in the stream raises ``UnsafePickleError``.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Final

from dranspose_fast.errors import DecodeError

__all__ = ["UnsafePickleError", "loads"]

_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "builtins": frozenset({"list", "dict", "tuple", "set", "frozenset", "bytearray",
                           "complex", "slice", "range", "object"}),
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone"}),
    "copyreg": frozenset({"_reconstructor"}),
    "_codecs": frozenset({"encode"}),
    "collections": frozenset({"OrderedDict"}),
    # numpy 1.x and 2.x module paths of array and scalar reconstruction
    "numpy": frozenset({"ndarray", "dtype", "float64", "float32", "int64", "int32", "uint16",
                        "uint32", "uint64", "uint8", "int8", "int16", "bool_", "str_"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
}


class UnsafePickleError(DecodeError):
    """A pickle asked for a class that is not plain data, or could not be read."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise UnsafePickleError(f"pickled {module}.{name} is not plain data; refused")


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Unpickle plain data (builtins, datetime, numpy arrays and scalars).

    Raises
    ------
    UnsafePickleError
        if the pickle names any other class, or is not a valid pickle.
    """
    try:
        # BufferedReader: the C unpickler reads protocol <= 3 pickles (Xspress3's metadata)
        # a line at a time; a bare BytesIO makes each of those a Python call (2x slower).
        return _DataUnpickler(io.BufferedReader(io.BytesIO(data))).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many types
        raise UnsafePickleError(f"not a valid pickle: {type(exc).__name__}: {exc}") from exc
