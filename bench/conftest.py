"""Shared pytest hooks of the benchmark suites: record how loaded the machine was.

The project's machine has 2 cores shared with other work, so a benchmark run is only as good as
the quiet it had. The load average at the start and at the end of the session goes into every
saved or ``--benchmark-json`` file (``machine_load``, outside ``machine_info`` so that
comparisons do not warn about it) and into the terminal summary, with a warning when the machine
was busier than its cores: compare such runs against a baseline with care.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

_load: dict[str, Any] = {}


def _snapshot() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1min": one, "5min": five, "15min": fifteen}


def pytest_sessionstart(session: pytest.Session) -> None:
    _load["start"] = _snapshot()
    _load["cpus"] = os.cpu_count() or 1


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any,
                                 output_json: dict[str, Any]) -> None:
    output_json["machine_load"] = {**_load, "end": _snapshot()}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    if "start" not in _load:
        return
    start, end, cpus = _load["start"]["1min"], os.getloadavg()[0], _load["cpus"]
    line = f"load average (1 min): {start:.2f} at start, {end:.2f} at end, {cpus} cpus"
    if max(start, end) > cpus:
        terminalreporter.write_line(
            line + ": the machine was busy, timings (and comparisons) are unreliable",
            yellow=True)
    else:
        terminalreporter.write_line(line)
