"""Side-by-side timing: alternate the contenders, repeat, report median and spread."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Measurement:
    """Repeated timings of one contender, in seconds."""

    name: str
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Half the range between the fastest and slowest repetition, relative to the median."""
        return (max(self.samples) - min(self.samples)) / 2 / self.median if self.median else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"median_s": self.median, "min_s": min(self.samples), "max_s": max(self.samples),
                "repeats": len(self.samples)}


def alternate(contenders: dict[str, Callable[[], object]], repeats: int = 5,
              setup: Callable[[str], None] | None = None) -> dict[str, Measurement]:
    """Time each contender ``repeats`` times, interleaved A, B, A, B... so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            if setup is not None:
                setup(name)
            started = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - started)
    return {name: Measurement(name, values) for name, values in samples.items()}


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
