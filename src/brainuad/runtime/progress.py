"""Progress for long work: tqdm bars on a terminal, one plain line per finished step when
stderr is a log file or a cluster job's output (bars would leave cursor escapes in every line),
nothing at all when brainuad is used as a library (the command line switches it on).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

_state = {"on": False}


def enable(on: bool = True) -> None:
    """Show progress (the command line does; a library caller may)."""
    _state["on"] = on


def _terminal() -> bool:
    return sys.stderr.isatty()


def track(items: Iterable, desc: str, total: int | None = None, *,
          unit: str = "subject") -> Iterable:
    """`items`, with a bar (terminal) or a line per finished item (log) when progress is on."""
    if not _state["on"]:
        return items
    if _terminal():
        from tqdm.auto import tqdm

        return tqdm(items, total=total, desc=desc, unit=unit)
    return _lines(items, desc, total if total is not None else _length(items), unit)


def _length(items: Iterable) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _lines(items: Iterable, desc: str, total: int | None, unit: str) -> Iterator:
    start = time.perf_counter()
    for done, item in enumerate(items, start=1):
        yield item
        of = f"/{total}" if total is not None else ""
        print(f"{desc}: {done}{of} {unit}(s) done ({time.perf_counter() - start:.1f} s)",
              file=sys.stderr, flush=True)


def note(line: str) -> None:
    """A line the user should read while the work goes on (an output redone, and why), on
    stderr above any bar, when progress is on."""
    if not _state["on"]:
        return
    if _terminal() and "tqdm" in sys.modules:
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


class Stages:
    """Named stages of one item (a scan): `done(name)` after each; a bar on a terminal, a line
    per stage in a log."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.bar, self._last = name, None, time.perf_counter()
        if _state["on"] and _terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"  {name}", unit="stage", leave=False)

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(1)
        elif _state["on"]:
            print(f"  {self.name}: {stage} ({now - self._last:.1f} s)", file=sys.stderr,
                  flush=True)
        self._last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def close_all() -> None:
    """End bars cut short by an error, so the error gets a line of its own."""
    if "tqdm" not in sys.modules:
        return
    from tqdm.auto import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def bars() -> bool:
    """Whether bars are shown (Lightning's training bar among them): progress on, a terminal."""
    return _state["on"] and _terminal()
