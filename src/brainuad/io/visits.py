"""The one rule for the order of a person's visits (BIDS sessions, the visits of compare's CSV,
the cohort page's axis), so that a baseline is never taken for a follow-up.

In order of precedence: an order the user states (`--session-order pre,post`); the acquisition
times (BIDS `sessions.tsv` or `scans.tsv`, `acq_time`; a CSV's `acq_time` column) where every
visit has a distinct one; dates (`2019-03-12`, `20190312`); the labels' numbers where the labels
share all their other text (`2` < `10`, `M06` < `M12`, `V1` < `V10`). Anything else (`pre` and
`post` with no time, `12.03.2019`, whose day and month a label cannot tell apart) has no order:
`visit_order` raises, naming the labels, and the caller leaves that person's pairs out or refuses,
never guesses. Text order is never used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from brainuad.errors import BrainUADError

#: how an order was found, as said in sidecars, summaries and the group table
STATED, TIMES, DATES, NUMBERS = ("stated order", "acquisition times", "dates in the labels",
                                 "numbers in the labels")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:?\d{2}(:?\d{2})?)?")
_COMPACT_DATE = re.compile(r"(19|20)\d{6}")
_DAY_FIRST = re.compile(r"\d{1,2}\D\d{1,2}\D\d{2,4}")  # 12.03.2019, 03/12/19: day or month?


class UnorderedVisits(BrainUADError):
    """The visits' order cannot be told from their labels or times."""


@dataclass(frozen=True)
class Order:
    labels: list[str]  # earliest first
    by: str  # STATED, TIMES, DATES or NUMBERS

    def pairs(self) -> list[tuple[str, str]]:
        """Each visit with the one before it: (baseline, follow-up)."""
        return list(zip(self.labels, self.labels[1:], strict=False))


def parse_time(value: str) -> datetime | None:
    """An `acq_time` (ISO 8601; BIDS writes `YYYY-MM-DDThh:mm:ss[.ffffff][Z]`), None if empty
    or `n/a`."""
    value = value.strip()
    if value in ("", "n/a"):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError as err:
        raise BrainUADError(f"acq_time {value!r} is not an ISO 8601 date and time") from err


def _as_date(label: str) -> datetime | None:
    try:
        if _ISO_DATE.fullmatch(label):
            return datetime.fromisoformat(label)
        if _COMPACT_DATE.fullmatch(label):
            return datetime.combine(date(int(label[:4]), int(label[4:6]), int(label[6:])),
                                    datetime.min.time())
    except ValueError:
        return None
    return None


def _numbers(label: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A label's text around its numbers, and its numbers: `M06` -> (('M', ''), (6,))."""
    parts = re.split(r"(\d+)", label)
    return tuple(parts[0::2]), tuple(int(p) for p in parts[1::2])


def _distinct(keys: list) -> bool:
    return len(set(keys)) == len(keys)


def visit_order(labels: list[str], times: dict[str, datetime | None] | None = None,
                stated: list[str] | None = None, who: str = "") -> Order:
    """`labels` (one person's visits) earliest first, and how that was found; `times` the
    visits' acquisition times where known, `stated` an order the user gave. Raises
    `UnorderedVisits`, naming `who` and the labels, where nothing tells the order."""
    labels = list(dict.fromkeys(labels))
    if len(labels) < 2:
        return Order(labels, NUMBERS)
    if stated and set(labels) <= set(stated):
        return Order(sorted(labels, key=stated.index), STATED)
    known = [(times or {}).get(label) for label in labels]
    if all(t is not None for t in known) and _distinct(known):
        return Order([label for _, label in sorted(zip(known, labels, strict=True))], TIMES)
    dates = [_as_date(label) for label in labels]
    if all(d is not None for d in dates) and _distinct(dates):
        return Order([label for _, label in sorted(zip(dates, labels, strict=True))], DATES)
    split = [_numbers(label) for label in labels]
    same_text = len({text for text, _ in split}) == 1
    numbers = [n for _, n in split]
    if (same_text and numbers[0] and _distinct(numbers)
            and not any(_DAY_FIRST.fullmatch(label) for label in labels)):
        return Order([label for _, label in sorted(zip(numbers, labels, strict=True))], NUMBERS)
    raise UnorderedVisits(
        f"{who + ': ' if who else ''}the order of the visits {', '.join(sorted(labels))} cannot "
        "be told (no acquisition time for each, and the labels are not numbers or dates "
        "that sort): state it, e.g. --session-order " + ",".join(sorted(labels)))
