"""Example analysis classes (they run on dranspose 0.2 too, after the import prefix change)."""
