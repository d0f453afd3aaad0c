"""The pace of a replay (``rate``, ``latency``) and its progress bar, for both ways of running
workers (in the replay's process, ``run``, or in worker processes, ``pool``)."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Pacing", "Progress", "progress_bar"]


class Pacing:
    """Sleeps so events play at ``rate`` per second (and ``latency`` after each, as in 0.2)."""

    def __init__(self, rate: float | None, latency: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.period = 1.0 / rate if rate else 0.0
        self.latency = latency or 0.0
        self.start = time.perf_counter()
        self.active = bool(self.period or self.latency)

    def wait(self, index: int) -> None:
        if self.latency:
            time.sleep(self.latency)
        if self.period:
            delay = self.start + index * self.period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


class Progress:
    """Counts events into a progress bar (tqdm, or none) in steps of 512."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.pending = 0

    def add(self, n: int) -> None:
        self.pending += n
        if self.pending >= 512:
            self.flush()

    def flush(self) -> None:
        if self.bar is not None and self.pending:
            self.bar.update(self.pending)
        self.pending = 0

    def close(self) -> None:
        self.flush()
        if self.bar is not None:
            self.bar.close()


def progress_bar(enabled: bool | None) -> Progress:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return Progress(None)
    from tqdm import tqdm

    return Progress(tqdm(unit="ev", desc="replay", mininterval=0.2))
