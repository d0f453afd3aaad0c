"""Pydantic models of upstream protocols' messages (dranspose 0.2 ``dranspose.data``)."""
