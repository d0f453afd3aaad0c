"""What the parse benches share: timing dranspose 0.2's parse in its venv, and the report line.

0.2's figure comes from a small timing script run under ``DRANSPOSE02_PYTHON`` (a subprocess:
0.2 and this package cannot share an interpreter); without that variable it is not measured.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

# Prepended to a timing script: ``read_capture(path)`` in 0.2's venv, as tests.captures reads
# a capture here (a stream of CBOR lists of frames, gzip-compressed if the name ends in .gz).
READ_CAPTURE_02 = '''
import gzip as _gzip
import cbor2 as _cbor2

def read_capture(path):
    out = []
    with (_gzip.open if path.endswith(".gz") else open)(path, "rb") as fh:
        while True:
            try:
                out.append([bytes(f) for f in _cbor2.load(fh)])
            except (_cbor2.CBORDecodeEOF, EOFError):
                return out
'''


def dr02_timing(script: str, *args: str, stdin: bytes | None = None) -> dict[str, Any] | None:
    """Run a timing script under 0.2's python and read the JSON object it prints.

    Parameters
    ----------
    script
        The code (run with ``-c``, after `READ_CAPTURE_02`).
    *args, stdin
        Its arguments and input.

    Returns
    -------
    dict or None
        What it printed; None without ``DRANSPOSE02_PYTHON``.
    """
    python = os.environ.get("DRANSPOSE02_PYTHON", "")
    if not python or not os.access(python, os.X_OK):
        return None
    res = subprocess.run([python, "-c", READ_CAPTURE_02 + script, *args], input=stdin,
                         capture_output=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"dranspose 0.2 timing failed: {res.stderr.decode()[-1000:]}")
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def dr02_median_us(script: str, *args: str, stdin: bytes | None = None) -> float | None:
    """The ``median_us`` a timing script prints (see `dr02_timing`); None if not measured."""
    out = dr02_timing(script, *args, stdin=stdin)
    return None if out is None else float(out["median_us"])


def record(benchmark: Any, title: str, per_call: int, theirs: float | None, *, key: str = "",
           ndigits: int = 2) -> None:
    """Put ours and 0.2's median (us per item) and the ratio in the record, and print them.

    Parameters
    ----------
    benchmark
        The pytest-benchmark fixture, after it ran (nothing is recorded if it was disabled).
    title
        What was timed, for the printed line.
    per_call
        Items per benchmarked call (the figures are per item).
    theirs
        0.2's median per item in microseconds, or None.
    key
        Suffix of the ``extra_info`` keys (``ours_median_us{key}``, ``dr02_median_us{key}``).
    ndigits
        Rounding of the recorded figures.
    """
    if benchmark.stats is None:  # --benchmark-disable: the code ran once, nothing was timed
        return
    ours = benchmark.stats.stats.median / per_call * 1e6
    benchmark.extra_info[f"ours_median_us{key}"] = round(ours, ndigits)
    if theirs is not None:
        benchmark.extra_info[f"dr02_median_us{key}"] = round(theirs, ndigits)
        benchmark.extra_info["speedup"] = round(theirs / ours, 1)
    print(f"\n{title}: ours {ours:.2f} us, dranspose 0.2 "
          + (f"{theirs:.2f} us ({theirs / ours:.1f}x)" if theirs is not None
             else "not measured (DRANSPOSE02_PYTHON unset)"))
