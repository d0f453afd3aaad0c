"""dranspose-fast: distributed event formation and map-reduce for detector streams.

The public containers are re-exported here; user classes import them exactly as they imported
``dranspose.event`` in dranspose 0.2, with only the package prefix changed.
"""

from __future__ import annotations

import importlib.util

__version__ = "0.1.0"

# The compiled core.  Importing from a checkout that was never built must say how to fix it.
_EXTENSIONS: tuple[str, ...] = (
    "_assemble", "_batch", "_binding", "_cborscan", "_route", "_stins", "_stream2", "_triggermap",
)

for _ext in _EXTENSIONS:
    if importlib.util.find_spec(f"dranspose_fast.{_ext}") is None:
        raise ImportError(
            f"dranspose_fast.{_ext} is not built: run 'pip install .' (or 'pip install -e .') "
            "in the dranspose-fast checkout to compile the extensions"
        )

from dranspose_fast.event import EventData, InternalWorkerMessage, ResultData, StreamData  # noqa: E402

__all__ = ["EventData", "InternalWorkerMessage", "ResultData", "StreamData", "__version__"]
