"""Loading user classes and hashing parameter versions."""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Mapping

from dranspose_fast.errors import ClassLoadError
from dranspose_fast.protocol import HashDigest, ParameterName, WorkParameter


def import_class(path: str) -> type:
    """Load ``"package.module:ClassName"``; the current directory is importable, as in 0.2.

    Raises
    ------
    ClassLoadError
        with one line saying what was wrong: the form, the module or the attribute.
    """
    if path.count(":") != 1 or not all(path.split(":")):
        raise ClassLoadError(f"class {path!r} must be given as 'module.path:ClassName'")
    module_name, class_name = path.split(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is a load error
        raise ClassLoadError(
            f"cannot import module {module_name!r} for {path!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise ClassLoadError(f"module {module_name!r} has no class {class_name!r}") from None
    if not isinstance(cls, type):
        raise ClassLoadError(f"{path!r} is a {type(cls).__name__}, not a class")
    return cls


def parameters_hash(parameters: Mapping[ParameterName, WorkParameter]) -> HashDigest:
    """SHA-256 over the parameters' uuids in name order (the 0.2 definition)."""
    digest = hashlib.sha256()
    for name in sorted(parameters):
        digest.update(parameters[name].uuid.bytes)
    return HashDigest(digest.hexdigest())
