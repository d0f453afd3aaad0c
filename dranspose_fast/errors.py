"""Exceptions raised by dranspose-fast, from Python and compiled code alike.

Every exception class of the package derives from ``DransposeFastError`` (the compiled
kernels' too; ``tests/test_errors.py`` checks it). The classes here also derive from the
builtin that code written against dranspose 0.2 catches (``ValueError``, ``ImportError``,
``RuntimeError``); 0.2's own names keep their 0.2 bases beside ours.

``DransposeFastError``
  * ``DecodeError`` (ValueError): ``_batch.BatchFormatError``, ``FrameError``, every
    protocol's ``*DecodeError``, ``JsonRefused``, ``DtypeRefused``, ``UnsafePickleError``
  * ``MapError``, ``DumpError``, ``ParameterFileError`` (ValueError), ``ClassLoadError``
    (ImportError)
  * ``UsageError`` (ValueError): ``_route.RouteError``
  * ``ServiceError`` (RuntimeError): ``PoolError``, ``ControllerError`` →
    ``ControllerLockError``
  * elsewhere, with ValueError: ``OpsError``, ``RequestError``, the ``api.h5types`` errors
  * 0.2's names (Exception): ``ProtocolException``, ``RedisException``,
    ``IsSoftwareTriggered``
"""

from __future__ import annotations

__all__ = [
    "ClassLoadError", "DecodeError", "DransposeFastError", "DumpError", "MapError",
    "ParameterFileError", "ServiceError", "UsageError",
]


class DransposeFastError(Exception):
    """Base of every error dranspose-fast raises on purpose."""


class DecodeError(DransposeFastError, ValueError):
    """A frame or header could not be decoded; the message says what and where."""


class MapError(DransposeFastError, ValueError):
    """A trigger map or sequence is invalid; the message names the part, stream and event."""


class DumpError(DransposeFastError, ValueError):
    """A dump file is truncated or corrupt; the message names the file and the byte offset."""


class ClassLoadError(DransposeFastError, ImportError):
    """A user class given as ``module:Class`` could not be loaded."""


class ParameterFileError(DransposeFastError, ValueError):
    """A parameter file is neither valid JSON, pickle nor CBOR of parameter records."""


class UsageError(DransposeFastError, ValueError):
    """A call whose arguments do not fit together: a bug in the caller, not bad input."""


class ServiceError(DransposeFastError, RuntimeError):
    """A component of the runtime cannot run (a process died, a lock is held elsewhere)."""
