"""Trigger maps: dranspose 0.2's ``dranspose.mapping`` (``MappingSequence``) and the binding of
a map's constraints to workers.

* ``sequence``: parsing, validation and read-back of the compiled map (``MappingSequence``);
* ``binding``: credit-based binding of a map's constraints to workers (``BindingEngine``).
"""

from __future__ import annotations

from dranspose_fast.mapping.binding import (
    DEFAULT_HORIZON,
    DEFAULT_MAX_BATCH,
    Batch,
    BindableMap,
    BindingEngine,
)
from dranspose_fast.mapping.sequence import (
    RESERVED_PART,
    MappingSequence,
    Name,
    SequenceIn,
    VirtualWorkerIn,
    parse_sequence,
)

__all__ = [
    "DEFAULT_HORIZON", "DEFAULT_MAX_BATCH", "RESERVED_PART", "Batch", "BindableMap",
    "BindingEngine", "MappingSequence", "Name", "SequenceIn", "VirtualWorkerIn", "parse_sequence",
]
