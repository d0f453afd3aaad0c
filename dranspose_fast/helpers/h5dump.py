"""Write a ``publish``-style dict to an HDF5 file (dranspose 0.2 ``helpers.h5dump``).

Nested dicts become groups and other values datasets; a sibling ``<name>_attrs`` dict holds the
attributes of ``<name>`` and the root ``_attrs`` dict those of the file, the same convention as
the h5dict HTTP view. Anything that cannot be written (non-string or empty keys, keys with
``/``, ``None``, object arrays, ...) is skipped with a warning naming its path and the file, so
one odd value never costs the rest of the dump.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import h5py
import numpy as np

__all__ = ["dump"]

logger = logging.getLogger(__name__)

_ATTRS = "_attrs"


def _h5_value(value: Any) -> Any:
    """Return ``value`` in a form h5py can store.

    Lists and arrays of ``str`` become variable-length UTF-8 strings; ``bytes`` with a NUL byte
    (pickled or binary parameters) become HDF5 opaque data, since HDF5 strings stop at NUL.
    """
    if isinstance(value, bytes) and b"\x00" in value:
        return np.void(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return np.array(value, dtype=h5py.string_dtype())
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return value.astype(h5py.string_dtype())
    return value


def _child(path: str, key: str) -> str:
    return f"{path.rstrip('/')}/{key}"


def _set_attrs(node: h5py.HLObject, attrs: Any, path: str, filename: str) -> None:
    if not isinstance(attrs, Mapping):
        logger.warning(
            "h5dump %s: attributes of %s are a %s, not a dict; skipped",
            filename,
            path,
            type(attrs).__name__,
        )
        return
    for name, value in attrs.items():
        if not isinstance(name, str) or not name:
            logger.warning("h5dump %s: attribute name %r of %s skipped", filename, name, path)
            continue
        try:
            node.attrs[name] = _h5_value(value)
        except Exception as exc:  # h5py raises TypeError, ValueError, OSError, ... per value
            logger.warning(
                "h5dump %s: attribute %r of %s skipped: %s: %s",
                filename,
                name,
                path,
                type(exc).__name__,
                exc,
            )


def _write_group(obj: Mapping[Any, Any], grp: h5py.Group, path: str, filename: str) -> None:
    written = set()
    for key, val in obj.items():
        if not isinstance(key, str) or not key or "/" in key or key in (".", ".."):
            logger.warning(
                "h5dump %s: key %r in %s is not a valid name; skipped", filename, key, path
            )
            continue
        if key.endswith(_ATTRS):
            continue
        where = _child(path, key)
        if isinstance(val, Mapping):
            _write_group(val, grp.create_group(key), where, filename)
            written.add(key)
            continue
        try:
            grp.create_dataset(key, data=_h5_value(val))
        except Exception as exc:  # any value h5py cannot store is skipped, not fatal
            logger.warning(
                "h5dump %s: %s skipped (%s): %s: %s",
                filename,
                where,
                type(val).__name__,
                type(exc).__name__,
                exc,
            )
            if key in grp:  # a failed write may leave an empty dataset behind
                del grp[key]
            continue
        written.add(key)
    for key, val in obj.items():
        if not isinstance(key, str) or key == _ATTRS or not key.endswith(_ATTRS):
            continue
        target = key[: -len(_ATTRS)]
        if target in written:
            _set_attrs(grp[target], val, _child(path, target), filename)
        elif target not in obj:
            logger.warning(
                "h5dump %s: %s has no object %r to attach to; skipped",
                filename,
                _child(path, key),
                target,
            )


def dump(
    data: Mapping[Any, Any],
    filename: str | os.PathLike[str],
    lock: AbstractContextManager[Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``data`` to the HDF5 file ``filename`` (overwritten).

    Parameters
    ----------
    data
        A ``publish``-style dict: dicts become groups, other values datasets, ``<k>_attrs``
        dicts attributes of ``k`` and the root ``_attrs`` dict root attributes.
    filename
        Path of the HDF5 file to create.
    lock
        Held while ``data`` is read and written (e.g. the reducer's ``publish_rlock``), so the
        file is a consistent snapshot.
    attrs
        Extra root attributes, written after (and so overriding) ``data["_attrs"]``; replay uses
        them for the parameters and the package version.

    Examples
    --------
    >>> import tempfile, os, h5py
    >>> path = os.path.join(tempfile.mkdtemp(), "out.h5")
    >>> dump({"a": {"b": 1}, "a_attrs": {"unit": "mm"}}, path)
    >>> with h5py.File(path) as f:
    ...     print(f["a/b"][()], f["a"].attrs["unit"])
    1 mm
    """
    name = os.fspath(filename)
    with lock if lock is not None else nullcontext(), h5py.File(name, "w") as root:
        _write_group(data, root, "/", name)
        if _ATTRS in data:
            _set_attrs(root, data[_ATTRS], "/", name)
        if attrs:
            _set_attrs(root, attrs, "/", name)
