"""What a replay did (``ReplayReport``): the CLI prints it and tests assert on it."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ReplayReport"]


@dataclass
class ReplayReport:
    """What a replay did; the CLI prints it and tests assert on it."""

    events: int = 0
    deliveries: int = 0
    results: int = 0
    worker_errors: int = 0
    reducer_errors: int = 0
    unmapped_events: int = 0
    input_errors: list[str] = field(default_factory=list)
    per_worker: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        workers = ", ".join(f"{k}: {v}" for k, v in sorted(self.per_worker.items()))
        lines = [
            f"replayed {self.events} events in {self.seconds:.3f} s "
            f"({self.events_per_second:,.0f} events/s)",
            f"deliveries to workers: {self.deliveries} ({workers})",
            f"results reduced: {self.results}",
        ]
        if self.worker_errors or self.reducer_errors:
            lines.append(
                f"errors: {self.worker_errors} in workers, {self.reducer_errors} in the reducer "
                "(see the log)"
            )
        for error in self.input_errors:
            lines.append(f"input error: {error}")
        if self.unmapped_events:
            lines.append(f"events not in the map (not delivered): {self.unmapped_events}")
        return "\n".join(lines)
