"""Scaling table of the whole pipeline (issue 13, item 4): workers × ingesters × frame size.

Runs ``bench/e2e.py`` (a user's configuration: the CLI's defaults, the 0.2-style payload, the
uniform map, CURVE with the local hop) for 1, 2 and 4 workers and 1 and 2 ingesters (one
stream each, every event holding a frame of each stream), 8 KiB and 1 MiB frames, each run
beside its own raw relay of the same streams. Prints a Markdown table of the medians: events/s,
the pipeline/relay ratio (with its range) and the CPU seconds per event of each role (from
``/proc``: a process's user + system time, libzmq's I/O threads included), and writes every
run to ``--json``.

    python bench/scaling.py --repeats 3 --json /tmp/scaling.json     # about 15 minutes

The machine has 2 cores: from 1 ingester + 2 workers on, the pipeline's processes are more
than the cores, so the table shows where CPU, not the design, sets the ceiling.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: (label, e2e.py arguments): 20,000 small frames or 2,000 big ones per stream.
SIZES = {"8 KiB": ["--frames", "20000", "--shape", "64", "64"],
         "1 MiB": ["--frames", "2000", "--shape", "512", "1024"]}
ROLES = ("controller", "ingester", "workers", "reducer")


def run(size: str, workers: int, ingesters: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "e2e.json"
        subprocess.run([sys.executable, str(ROOT / "bench" / "e2e.py"), *SIZES[size],
                        "--workers", str(workers), "--ingesters", str(ingesters),
                        "--repeats", str(repeats), "--json", str(out)], check=True, cwd=ROOT)
        summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def cpu_per_event(summary: dict[str, Any]) -> dict[str, float]:
    """Median CPU µs per event of each role (workers and ingesters summed)."""
    events = summary["frames"] + 2
    per_run: dict[str, list[float]] = {role: [] for role in ROLES}
    for r in summary["runs"]:
        cpu = r["ours"]["cpu"]
        sums = dict.fromkeys(ROLES, 0.0)
        for name, seconds in cpu.items():
            role = ("workers" if name.startswith("w") and name[1:].isdigit()
                    else "ingester" if name.startswith("eiger") else name)
            if role in sums:
                sums[role] += seconds
        for role in ROLES:
            per_run[role].append(sums[role] / events * 1e6)
    return {role: statistics.median(v) for role, v in per_run.items()}


def row(size: str, workers: int, ingesters: int, summary: dict[str, Any]) -> str:
    cpu = cpu_per_event(summary)
    lo, hi = summary["ratio_range"]
    relay_cpu = statistics.median(r["baseline"]["cpu_relay"] for r in summary["runs"])
    relay_us = relay_cpu / (summary["frames"] + 2) * 1e6
    return (f"| {size} | {workers} | {ingesters} | {summary['events_per_s']:,.0f} | "
            f"{summary['GB_per_s']:.2f} | {summary['raw_frames_per_s']:,.0f} | "
            f"**{summary['ratio_median']:.2f}** ({lo:.2f}–{hi:.2f}) | "
            + " | ".join(f"{cpu[r]:.1f}" for r in ROLES) + f" | {relay_us:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--ingesters", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    header = ("| frames | workers | ingesters | events/s | GB/s | relay events/s | ratio "
              "(min–max) | " + " | ".join(f"{r} µs/event" for r in ROLES)
              + " | relay µs/event |")
    rows: list[str] = []
    results: list[dict[str, Any]] = []
    for size, ingesters, workers in itertools.product(args.sizes, args.ingesters,
                                                      args.workers):
        summary = run(size, workers, ingesters, args.repeats)
        results.append({"size": size, "workers": workers, "ingesters": ingesters,
                        "summary": summary})
        rows.append(row(size, workers, ingesters, summary))
        print(rows[-1], flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
