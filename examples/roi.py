"""Example: ROI sums of detector images, reduced into a map by motor position.

A raster scan records two streams: ``eiger`` (STINS images) and ``positions`` (one JSON
message per trigger with the motor positions ``x`` and ``y``).  Every worker sums a region of
interest of its images; the reducer bins the sums by position into a 2-D map.

Run it offline on the shipped recording::

    dranspose-fast replay -w examples.roi:RoiWorker -r examples.roi:RoiReducer \\
        -f examples/data/eiger.cbors examples/data/positions.cbors \\
        -p examples/parameters.json --out example-result.h5
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from dranspose_fast.data.stream1 import Stream1Data
from dranspose_fast.event import EventData, ResultData
from dranspose_fast.middlewares.stream1 import parse
from dranspose_fast.parameters import IntParameter, ParameterBase, StrParameter
from dranspose_fast.protocol import ParameterName, WorkParameter

Parameters = dict[ParameterName, WorkParameter]


def _roi(parameters: Parameters) -> tuple[int, int, int, int]:
    """The ``roi`` parameter: JSON ``[y0, y1, x0, x1]`` (pixel slice bounds)."""
    try:
        y0, y1, x0, x1 = (int(v) for v in json.loads(parameters["roi"].value or "[]"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"parameter roi must be JSON [y0, y1, x0, x1], got "
                         f"{parameters['roi'].value!r}") from exc
    return y0, y1, x0, x1


class RoiWorker:
    """Sums the ROI and the whole image of every detector frame, tagged with its position."""

    def __init__(self, parameters: Parameters, **kwargs: Any) -> None:
        self.roi = _roi(parameters)
        self.roi_data = parameters["roi"].data

    @staticmethod
    def describe_parameters() -> list[ParameterBase]:
        return [
            StrParameter(name=ParameterName("roi"), default="[12, 20, 12, 20]",
                         description="ROI as JSON [y0, y1, x0, x1]"),
        ]

    def process_event(self, event: EventData, parameters: Parameters, tick: bool = False) -> Any:
        if "eiger" not in event.streams or "positions" not in event.streams:
            return None
        packet = parse(event.streams["eiger"])
        if not isinstance(packet, Stream1Data):
            return None  # the series header and end carry no image
        if parameters["roi"].data != self.roi_data:  # changed during the scan
            self.roi, self.roi_data = _roi(parameters), parameters["roi"].data
        y0, y1, x0, x1 = self.roi
        image = packet.data
        position = json.loads(bytes(event.streams["positions"].frames[0]))
        return {
            "position": (float(position["x"]), float(position["y"])),
            "roi": float(image[y0:y1, x0:x1].sum(dtype=np.int64)),
            "total": float(image.sum(dtype=np.int64)),
        }


class RoiReducer:
    """Bins ROI and total sums by (x, y) into a map served live and written at the end."""

    def __init__(self, parameters: Parameters, **kwargs: Any) -> None:
        from dranspose_fast.ops import BinnedMap

        n = int(parameters["map_bins"].value or 20)
        self.map = BinnedMap(bins=(n, n), range=((-0.5, n - 0.5), (-0.5, n - 0.5)),
                             value_shape=2)
        self.publish_rlock = threading.Lock()
        x, y = self.map.centers
        self.publish: dict[str, Any] = {
            "map": {"roi": np.full((n, n), np.nan), "total": np.full((n, n), np.nan),
                    "count": np.zeros((n, n), np.int64), "x": x, "y": y},
            "events": 0,
            "out_of_range": 0,
        }

    @staticmethod
    def describe_parameters() -> list[ParameterBase]:
        return [IntParameter(name=ParameterName("map_bins"), default=20,
                             description="bins per axis of the position map")]

    def process_result(self, result: ResultData, parameters: Parameters) -> None:
        payload = result.payload
        self.map.add(payload["position"], (payload["roi"], payload["total"]))

    def _publish(self) -> None:
        mean = self.map.mean
        with self.publish_rlock:
            self.publish["map"]["roi"] = mean[..., 0]
            self.publish["map"]["total"] = mean[..., 1]
            self.publish["map"]["count"] = self.map.count
            self.publish["events"] = self.map.n_events
            self.publish["out_of_range"] = self.map.out_of_range

    def timer(self, parameters: Parameters) -> float:
        self._publish()
        return 0.5

    def finish(self, parameters: Parameters) -> None:
        self._publish()
