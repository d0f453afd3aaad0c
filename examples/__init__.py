"""Example analysis classes for dranspose-fast (also runnable on dranspose 0.2 after the prefix change)."""
