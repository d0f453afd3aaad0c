"""Pydantic models of upstream protocols' messages (dranspose 0.2 ``dranspose.data``)."""

from __future__ import annotations

__all__: list[str] = []  # the modules below are the names
