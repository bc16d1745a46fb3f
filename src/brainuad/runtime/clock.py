"""Seconds per named stage, for the timings every command reports."""

from __future__ import annotations

import os
import time

#: a file to which `stamp` appends "<event> <epoch seconds>" lines, for benchmarks/segment.py
#: to split a process's wall time into start-up, work and exit
STAMPS = "BRAINUAD_STAMPS"


def stamp(event: str) -> None:
    """Note the wall-clock time of `event` where `BRAINUAD_STAMPS` names a file."""
    path = os.environ.get(STAMPS)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(f"{event} {time.time():.6f}\n")


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
