"""The one exception type for problems in a user's input, and `--keep-going` for cohorts.

The CLI prints its message as a single line and exits non-zero; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class BrainUADError(ValueError):
    """Bad input: the message names the file (or option) and what is wrong with it."""


def first_line(err: Exception) -> str:
    """An exception's first line of text (its type's name where it has none), for a one-line
    error that quotes a library's own words."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class SubjectsFailed(BrainUADError):
    """Some subjects failed under `--keep-going`; the others' outputs were written."""

    def __init__(self, failures: dict[str, str], total: int, stage: str) -> None:
        self.failures = failures
        lines = [f"{stage}: {len(failures)} of {total} subject(s) failed, the others are done:"]
        lines += [f"  {name}: {why}" for name, why in failures.items()]
        super().__init__("\n".join(lines))


@dataclass
class Failed:
    """What `attempt` returns for a subject that failed: why, in one line."""

    reason: str


def attempt(keep_going: bool, fn: Callable, *args: Any) -> Any:
    """`fn(*args)`; with `keep_going` a failure is returned as `Failed` instead of raised, so
    one broken scan does not stop a cohort (a bug shows its exception type in the reason)."""
    try:
        return fn(*args)
    except Exception as err:
        if not keep_going:
            raise
        reason = str(err) if isinstance(err, BrainUADError) else f"{type(err).__name__}: {err}"
        return Failed(reason.splitlines()[0] if reason else type(err).__name__)


def raise_failures(names: list[str], results: list[Any], stage: str) -> None:
    """After a `--keep-going` loop: one error listing every subject that failed, and why."""
    failures = {n: r.reason for n, r in zip(names, results, strict=True) if isinstance(r, Failed)}
    if failures:
        raise SubjectsFailed(failures, len(names), stage)
