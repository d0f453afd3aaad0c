"""Parsers users call on StreamData in their workers (dranspose 0.2 `dranspose.middlewares`)."""

from __future__ import annotations

__all__: list[str] = []  # the modules below are the names
