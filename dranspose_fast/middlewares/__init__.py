"""Parsers users call on StreamData in their workers (dranspose 0.2 `dranspose.middlewares`)."""
