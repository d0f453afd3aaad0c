"""Exceptions raised by dranspose-fast, from Python and compiled code alike.

Every class derives from a builtin (``ValueError``, ``ImportError``, ``OSError``) so that code
written against dranspose 0.2, which catches builtins, keeps working.
"""

from __future__ import annotations


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
