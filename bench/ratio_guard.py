"""Regression guard of the whole pipeline: its throughput as a share of the raw relay's.

Runs ``bench/e2e.py`` as a user's run (its default configuration, 8 KiB frames), reads the
median pipeline/relay ratio of the run and compares it with the saved baseline
(``bench/.baseline/e2e_ratio.json``): a ratio below ``baseline × (1 - tolerance)`` fails
(exit 1) with both figures.  A ratio, not a time: the relay runs in the same run on the same
machine, so a slower or busier machine moves both.  ``tox -e bench`` runs it after the kernel
suite; no test of the suite runs it (timed assertions never go into tests).

    python bench/ratio_guard.py                 # compare (about a minute)
    python bench/ratio_guard.py --save          # measure and save a new baseline
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "bench" / ".baseline" / "e2e_ratio.json"


class RatioBaseline(BaseModel):
    """The saved figure and how it was measured (the same arguments are used to compare)."""

    ratio: float = Field(gt=0)
    tolerance: float = Field(0.2, gt=0, lt=1)
    e2e_args: list[str]
    measured: str
    runs: list[float]


def measure(e2e_args: list[str]) -> dict[str, Any]:
    """One ``bench/e2e.py`` invocation; its JSON summary."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "e2e.json"
        subprocess.run([sys.executable, str(ROOT / "bench" / "e2e.py"), *e2e_args,
                        "--json", str(out)], check=True, cwd=ROOT)
        summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def run_ratios(summary: dict[str, Any]) -> list[float]:
    return [r["baseline"]["seconds"] / r["ours"]["seconds"] for r in summary["runs"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", action="store_true", help="save the measured ratio as baseline")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="allowed relative drop (default: the baseline's, 0.2 when saving)")
    parser.add_argument("--e2e-args", default="--frames 20000 --shape 64 64 --workers 2 "
                        "--repeats 3", help="arguments of bench/e2e.py when saving")
    args = parser.parse_args()
    if args.save:
        e2e_args = args.e2e_args.split()
        summary = measure(e2e_args)
        saved = RatioBaseline(ratio=summary["ratio_median"], tolerance=args.tolerance or 0.2,
                              e2e_args=e2e_args, measured=datetime.now(UTC).isoformat(),
                              runs=run_ratios(summary))
        BASELINE.write_text(saved.model_dump_json(indent=1) + "\n")
        print(f"saved {BASELINE.relative_to(ROOT)}: ratio {saved.ratio:.3f}")
        return 0
    baseline = RatioBaseline.model_validate_json(BASELINE.read_text())
    tolerance = args.tolerance if args.tolerance is not None else baseline.tolerance
    summary = measure(baseline.e2e_args)
    ratio = float(summary["ratio_median"])
    floor = baseline.ratio * (1 - tolerance)
    runs = ", ".join(f"{r:.3f}" for r in run_ratios(summary))
    verdict = "ok" if ratio >= floor else "SLOWER"
    print(f"pipeline/relay ratio {ratio:.3f} (runs {runs}); baseline {baseline.ratio:.3f} "
          f"from {baseline.measured[:10]}, floor {floor:.3f} (-{tolerance:.0%}): {verdict}")
    return 0 if ratio >= floor else 1


if __name__ == "__main__":
    sys.exit(main())
