"""Draw the example's binned ROI map from the replay's HDF5 output as a PNG.

    python examples/plot_map.py example-result.h5 example-map.png

``map/roi`` is the mean ROI sum per position bin, ``map/x`` / ``map/y`` the bin centres (as
``examples.roi.RoiReducer`` publishes them); bins no event fell in are blank.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt
import numpy as np


def plot(result: Path, png: Path) -> None:
    with h5py.File(result, "r") as f:
        roi = np.asarray(f["map/roi"], dtype=float)
        count = np.asarray(f["map/count"])
        x = np.asarray(f["map/x"])
        y = np.asarray(f["map/y"])
        roi_spec = f.attrs.get("parameter_roi", "")
    roi = np.where(count > 0, roi, np.nan)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    dx, dy = (x[-1] - x[0]) / max(len(x) - 1, 1), (y[-1] - y[0]) / max(len(y) - 1, 1)
    extent = (x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2)
    image = ax.imshow(roi.T, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="mean ROI sum (counts)")
    ax.set_xlabel("x position")
    ax.set_ylabel("y position")
    ax.set_title(f"ROI {roi_spec} by position, {int(count.sum())} events")
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python examples/plot_map.py RESULT.h5 OUT.png")
    plot(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]}")
