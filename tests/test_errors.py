"""Every exception class of the package derives from ``errors.DransposeFastError``.

Imports every module of the package (the compiled ones too) and looks at every class it
defines; a class that derives from ``BaseException`` must derive from the package's base, so
``except DransposeFastError`` catches whatever dranspose-fast raises on purpose.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import dranspose_fast
from dranspose_fast import errors

#: Modules that need an optional dependency that may be missing here.
OPTIONAL = {"dranspose_fast.ops._kernels"}


def _modules() -> list[types.ModuleType]:
    out = [dranspose_fast]
    for info in pkgutil.walk_packages(dranspose_fast.__path__, "dranspose_fast."):
        try:
            out.append(importlib.import_module(info.name))
        except ImportError:
            if info.name not in OPTIONAL:
                raise
    return out


def test_every_exception_derives_from_the_package_base() -> None:
    found: dict[str, type] = {}
    for module in _modules():
        for _name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and issubclass(obj, BaseException):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    assert "dranspose_fast._batch.BatchFormatError" in found
    assert "dranspose_fast._route.RouteError" in found
    stray = sorted(name for name, cls in found.items()
                   if not issubclass(cls, errors.DransposeFastError))
    assert stray == [], f"exception classes outside errors.DransposeFastError: {stray}"
