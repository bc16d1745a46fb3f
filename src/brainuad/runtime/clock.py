"""Seconds per named stage, for the timings every command reports."""

from __future__ import annotations

import time


class Stopwatch:
    """Seconds per named stage, in order: `lap(name)` closes the stage that just ran."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self._last
        self._last = now

    def seconds(self, start: float) -> dict[str, float]:
        """Each stage's seconds, and the total since `start` (a `time.perf_counter()`)."""
        return {**{k: round(v, 3) for k, v in self.stages.items()},
                "total": round(time.perf_counter() - start, 3)}
