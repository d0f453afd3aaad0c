"""Loading user classes, hashing parameter versions, and 0.2's asyncio task helpers."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from dranspose_fast.errors import ClassLoadError
from dranspose_fast.protocol import HashDigest, ParameterName, WorkParameter

__all__ = ["cancel_and_wait", "done_callback", "import_class", "parameters_hash"]

logger = logging.getLogger(__name__)


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


# === asyncio helpers (0.2 names; our services use threads, user code may still use asyncio) ===


def done_callback(futr: asyncio.Future[Any]) -> None:
    """``task.add_done_callback(done_callback)``: log a background task that crashed.

    A task that was cancelled or finished normally is silent; an exception is logged with its
    traceback instead of being lost with the task (as in 0.2).
    """
    if futr.cancelled():
        return
    exc = futr.exception()
    if exc is not None:
        logger.error("background task crashed: %r", exc, exc_info=exc)


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has really stopped.

    The task's own ``CancelledError`` (and a ``StopIteration`` of a generator-driven task) is
    swallowed; any other exception it raises while stopping is logged, not raised, as in 0.2.
    Cancelling the caller itself still propagates.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we were cancelled ourselves, not only the task we waited for
    except StopIteration:
        pass
    except Exception as exc:
        logger.error("task raised while being cancelled: %r", exc)
