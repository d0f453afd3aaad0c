"""Helpers users import from their classes (dranspose 0.2 ``dranspose.helpers``)."""
