"""compare's change detector as it ships (`detector.json` beside this module, written by
`python benchmarks/compare_harness.py --write`): its settings, chosen on the validation pairs,
and its null, the volume it flags at each threshold on real raw FLAIRs each against a simulated
rescan of itself (`data.shifts.rescanned`: rigid motion, new noise, a bias field, a second
interpolation; no change of protocol, so real rescans may flag more).

The operating point a user sets is that expected false-change volume (`--false-ml`, ml on such
a pair, as `segment --flag-fraction` sets a fraction of voxels): the lowest threshold whose mean
flagged volume over the null's rescans is at most that. The null's scans never include
patient01's (its change mask is the test kept outside the project)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path

from brainuad.errors import BrainUADError
from brainuad.longitudinal.change import ChangeConfig

FILE = Path(__file__).with_name("detector.json")


@dataclass(frozen=True)
class Shipped:
    name: str  # the detector
    version: str
    settings: dict  # of ChangeConfig, all but the threshold
    thresholds: tuple[float, ...]  # low to high
    mean_false_ml: tuple[float, ...]  # per threshold, over the null's rescans
    max_false_ml: tuple[float, ...]
    scans: tuple[str, ...]  # the null's raw FLAIRs
    false_ml: float  # the default operating point
    chosen: str  # what chose what, in words

    def threshold(self, false_ml: float | None = None) -> float:
        """The lowest threshold whose mean false-change volume on the null is at most
        `false_ml` (default: the shipped operating point)."""
        wanted = self.false_ml if false_ml is None else false_ml
        if wanted < 0:
            raise BrainUADError(f"--false-ml {wanted}: must be >= 0 (ml)")
        for threshold, flagged in zip(self.thresholds, self.mean_false_ml, strict=True):
            if flagged <= wanted:
                return threshold
        raise BrainUADError(f"--false-ml {wanted}: below what the detector's strictest "
                            f"threshold ({self.thresholds[-1]}) flags on scan-rescan pairs "
                            f"({self.mean_false_ml[-1]} ml)")

    def config(self, false_ml: float | None = None) -> ChangeConfig:
        return ChangeConfig(**self.settings, threshold=self.threshold(false_ml))

    def describe(self, false_ml: float | None = None) -> dict:
        """What a pair's summary says of the detector and its operating point (and the mean
        false-change volume of the null at the threshold taken, which may be below the one
        asked for)."""
        wanted = self.false_ml if false_ml is None else false_ml
        threshold = self.threshold(false_ml)
        return {"name": self.name, "version": self.version, "false_ml": wanted,
                "threshold": threshold,
                "null_false_ml": self.mean_false_ml[self.thresholds.index(threshold)],
                "chosen": self.chosen}


@functools.lru_cache(maxsize=1)
def shipped(path: Path = FILE) -> Shipped:
    """The detector as shipped; a missing or damaged file is one line naming it."""
    try:
        data = json.loads(Path(path).read_text())
        null = data["null"]
        known = {f.name for f in fields(ChangeConfig)} - {"threshold"}
        if set(data["settings"]) != known:  # every setting, so no default of the code moves it
            raise ValueError(f"unknown settings {sorted(set(data['settings']) - known)}, "
                             f"missing {sorted(known - set(data['settings']))}")
        ChangeConfig(**data["settings"])  # the settings' types
        curve = [tuple(float(v) for v in null[k])
                 for k in ("thresholds", "mean_false_ml", "max_false_ml")]
        if not curve[0] or len({len(c) for c in curve}) != 1:
            raise ValueError("its thresholds and false-change volumes differ in number")
        if any(b <= a for a, b in zip(curve[0], curve[0][1:], strict=False)):
            raise ValueError("its thresholds are not increasing")
        return Shipped(data["name"], str(data["version"]), data["settings"], *curve,
                       tuple(null["scans"]), float(data["false_ml"]), data["chosen"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BrainUADError(f"{path}: compare's detector cannot be read ({err}); reinstall "
                            "brainuad") from err
