"""The shipped example: the README's main job end to end, and the recording's provenance."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_main_job_replays_the_example_into_a_map(tmp_path: Path) -> None:
    out = tmp_path / "result.h5"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dranspose_fast.cli",
            "replay",
            "-w",
            "examples.roi:RoiWorker",
            "-r",
            "examples.roi:RoiReducer",
            "-f",
            str(DATA / "eiger.cbors"),
            str(DATA / "positions.cbors"),
            "-p",
            str(ROOT / "examples" / "parameters.json"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "replayed 402 events" in proc.stdout and "results reduced: 400" in proc.stdout
    with h5py.File(out) as f:
        roi = f["map/roi"][()]
        assert f["map/count"][()].tolist() == np.ones((20, 20), int).tolist()
        assert f["events"][()] == 400 and f["out_of_range"][()] == 0
        # the brighter grain of the generated sample sits at x=6, y=12 (map index [x, y])
        assert np.unravel_index(np.argmax(roi), roi.shape) == (6, 12)
        assert roi[14, 5] > 2 * np.median(roi)  # the second grain
        assert f.attrs["parameter_roi"] == "[12, 20, 12, 20]"
        assert f.attrs["dranspose_fast_version"]


def test_recording_is_reproducible_and_small(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_example_dump.py"), "--out", str(tmp_path)],
        cwd=ROOT,
        env=ENV,
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in ("eiger.cbors", "positions.cbors"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    assert sum(p.stat().st_size for p in DATA.iterdir()) < 2 * 1024 * 1024


def test_bad_input_gives_one_line_and_exit_code_2(tmp_path: Path) -> None:
    cases = [
        (
            [
                "-w",
                "examples.roi:Nope",
                "-r",
                "examples.roi:RoiReducer",
                "-f",
                str(DATA / "eiger.cbors"),
            ],
            "has no class 'Nope'",
        ),
        (
            [
                "-w",
                "examples.roi:RoiWorker",
                "-r",
                "examples.roi:RoiReducer",
                "-f",
                "missing.cbors",
            ],
            "missing.cbors",
        ),
        (
            [
                "-w",
                "examples.roi:RoiWorker",
                "-r",
                "examples.roi:RoiReducer",
                "-f",
                str(DATA / "eiger.cbors"),
                "-p",
                str(DATA / "eiger.cbors"),
            ],
            "cannot read parameters",
        ),
        (
            [
                "-w",
                "examples.roi:RoiWorker",
                "-r",
                "examples.roi:RoiReducer",
                "-f",
                str(DATA / "eiger.cbors"),
                "--map",
                str(tmp_path / "nomap.json"),
            ],
            "nomap.json",
        ),
        (
            ["-w", "noseparator", "-r", "examples.roi:RoiReducer", "-f", str(DATA / "eiger.cbors")],
            "module.path:ClassName",
        ),
    ]
    for args, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "dranspose_fast.cli", "replay", *args],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
