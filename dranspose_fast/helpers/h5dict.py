"""dranspose 0.2's ``helpers.h5dict`` path: the HDF5-REST view of a ``publish`` dict.

The view itself is ``dranspose_fast.api.h5dict`` (the reducer and replay serve it); this
module gives it 0.2's import path and names: ``router`` to include in an app whose
``app.state.get_data()`` returns ``(publish, lock)``, the route functions, and ``app``, a
stand-alone demo serving the sample ``get_data()`` below, e.g. to try a viewer::

    uvicorn dranspose_fast.helpers.h5dict:app --port 5010
    # then: h5pyd / silx at http://localhost:5010
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from dranspose_fast.api.h5dict import (
    attribute,
    attributes,
    create_app,
    datasets,
    group,
    link,
    links,
    logger,
    read_root,
    router,
    values,
)

__all__ = [
    "app",
    "attribute",
    "attributes",
    "datasets",
    "get_data",
    "group",
    "link",
    "links",
    "logger",
    "read_root",
    "router",
    "values",
]


def get_data() -> tuple[dict[str, Any], AbstractContextManager[None]]:
    """A sample ``publish`` with every kind of value the view handles, and no lock.

    Groups with NeXus-style attributes, 1-d and 2-d arrays, scalars, text, a compound array
    and a dataset whose shape changes over time (so a polling viewer sees updates).
    """
    pair = np.dtype({"names": ["a", "b"], "formats": [np.float64, np.int64]})
    motor = np.linspace(0.0, 1.0, 42)
    data: dict[str, Any] = {
        "_attrs": {"NX_class": "NXentry"},
        "hello": "World",
        "count": 42,
        "ratio": np.float32(0.5),
        "growing": np.ones((5, int(time.time()) % 10 + 5)),
        "big_endian": np.ones((10, 10), dtype=">u8"),
        "big_endian_attrs": {"note": "stored big-endian"},
        "pairs": np.array([(0.5, 1), (1.5, 2)], dtype=pair),
        "pairs_attrs": {"axes": ["I", "q"]},
        "scan": {
            "x": [float(v) for v in np.linspace(-15.0, -14.0, 5)],
            "y": [float(v) for v in np.linspace(-10.0, -9.9, 5)],
        },
        "line_attrs": {"NX_class": "NXdata", "axes": ["motor"], "signal": "data"},
        "line": {
            "data": np.ones(42),
            "data_attrs": {"long_name": "photons"},
            "motor": motor,
            "motor_attrs": {"long_name": "motor position"},
        },
        "image_attrs": {"NX_class": "NXdata", "axes": ["motor", "."], "signal": "frame",
                        "interpretation": "image"},
        "image": {"frame": np.ones((42, 42)), "motor": motor},
    }
    return data, nullcontext()


#: The demo app: ``router`` serving ``get_data()`` at ``/``.
app = create_app(get_data)
