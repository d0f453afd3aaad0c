"""Helpers users import from their classes (dranspose 0.2 ``dranspose.helpers``)."""

from __future__ import annotations

__all__: list[str] = []  # the modules below are the names
