"""What the protocol parsers share: lenient JSON, plain numpy dtypes, short values in errors.

Private to the package: ``middlewares`` and ``ingesters`` import it, users do not.  Each
parser words its own errors (stream, frame, field) around the problems raised here.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Final

import msgspec
import numpy as np

from dranspose_fast.errors import DecodeError

__all__ = [
    "DTYPES", "DtypeRefused", "JsonRefused", "json_object", "json_value", "plain_dtype", "short",
]

_json_decode = msgspec.json.decode

#: Resolved dtypes by name: parsers look here first (a dict ``get`` on the hot path).
DTYPES: dict[str, np.dtype[Any]] = {}
_DTYPES_MAX: Final = 256  # names come from the network: the cache must not grow without bound


class JsonRefused(DecodeError):
    """A frame that is no JSON; the message reads after "frame N is ..." (``a list, ...``)."""


class DtypeRefused(DecodeError):
    """A dtype name refused; the message reads after "field 'type' = 'x' ..."."""


def json_value(frame: Any) -> Any:
    """The JSON value of ``frame``, read as dranspose 0.2 read it (Python's ``json``).

    msgspec decodes; what it refuses and ``json`` accepts (``NaN``, ``Infinity``, numbers
    beyond a double) is decoded again by ``json`` on that (rare) path.

    Parameters
    ----------
    frame
        ``bytes``, ``zmq.Frame`` or another buffer.

    Raises
    ------
    JsonRefused
        ``a <type>, expected bytes or zmq.Frame`` or ``not valid JSON: <msgspec's reason>``.
    """
    try:
        return _json_decode(frame)
    except TypeError:
        raise JsonRefused(
            f"a {type(frame).__name__}, expected bytes or zmq.Frame") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        problem = str(exc)
    try:
        return json.loads(bytes(frame))
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
        raise JsonRefused(f"not valid JSON: {problem}") from None


def json_object(frame: Any) -> dict[str, Any]:
    """``json_value(frame)``, which must be a JSON object.

    Raises
    ------
    JsonRefused
        as ``json_value``, or ``a JSON <type>, expected an object``.
    """
    value = json_value(frame)
    if type(value) is not dict:
        raise JsonRefused(f"a JSON {type(value).__name__}, expected an object")
    return value


def plain_dtype(name: str) -> np.dtype[Any]:
    """The numpy dtype ``name``: a plain fixed-size type (no objects, records, subarrays).

    Deprecated aliases are refused rather than warned about once per message.  A dtype
    resolved is kept in ``DTYPES``.

    Raises
    ------
    DtypeRefused
        ``is no numpy dtype``, ``is not a plain numeric or bytes dtype`` or ``has no item
        size``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dtype = np.dtype(name)
    except Exception:  # numpy raises TypeError, ValueError, SyntaxError or a warning here
        raise DtypeRefused("is no numpy dtype") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise DtypeRefused("is not a plain numeric or bytes dtype")
    if dtype.itemsize == 0:
        raise DtypeRefused("has no item size")
    if len(DTYPES) < _DTYPES_MAX:
        DTYPES[name] = dtype
    return dtype


def short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
