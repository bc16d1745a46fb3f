"""Operating points, fixed when a model is trained or released, never at detection time.

A detector's threshold is a quantile of its scores on held-out scans: the `val` split of the
training manifest (the scans it was fitted on would put it too low for a model that fits them
well), or the training scans when there is no validation split. The scores are streamed into a
fixed-memory histogram (`ScoreHistogram`), so the memory does not grow with the cohort and
histograms of several processes (ranks) add up. Quantiles are kept at 0.1 % steps for every
scoring (slices, residual, precision): any percentile or false-positive rate on that grid is then
a lookup.

Beside the label-free percentiles, a model folder may hold operating points chosen on a
labelled validation set (synthetic lesions in held-out scans, `choose_operating_point`): per
scoring, the threshold with the best Dice over all of it.

    threshold.json = {"version": 2, "percentile": 98, "threshold": <the run's own scoring>,
                      "calibration": {"split": "val", "subjects": [...]},
                      "scorings": {<key>: {"quantiles": [...], "voxels": n, "range": [lo, hi]}},
                      "operating_points": {<key>: {"threshold": t, ...}}}   (optional)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainuad.errors import BrainUADError

#: Percentiles 0.0, 0.1, ..., 100.0 of the calibration scores are kept.
PERCENTILES = np.arange(1001) / 10
#: Histogram bins: over a [0, 1] residual one bin is 1e-5 wide, so a percentile read from it is
#: within 1e-5 of the exact one (the bound asked for is 1e-4 of the range); 800 kB per scoring.
BINS = 100_000
VERSION = 2


class ScoreHistogram:
    """Counts of scores in `BINS` equal bins over [lo, hi] (values beyond are counted in the end
    bins, and the exact extremes are kept): fixed memory, and two histograms of the same range
    add up, so subjects, shards and processes can be counted apart and merged."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0, bins: int = BINS) -> None:
        if not hi > lo:
            raise ValueError(f"histogram range [{lo}, {hi}] is empty")
        self.lo, self.hi = float(lo), float(hi)
        self.counts = np.zeros(bins, np.int64)
        self.min, self.max = np.inf, -np.inf

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64).ravel()
        if not values.size:
            return
        bins = len(self.counts)
        index = np.clip(((values - self.lo) / (self.hi - self.lo) * bins).astype(np.int64),
                        0, bins - 1)
        self.counts += np.bincount(index, minlength=bins)
        self.min, self.max = min(self.min, float(values.min())), max(self.max,
                                                                     float(values.max()))

    def merge(self, other: ScoreHistogram) -> None:
        if (other.lo, other.hi, len(other.counts)) != (self.lo, self.hi, len(self.counts)):
            raise ValueError("histograms of different ranges do not merge")
        self.counts += other.counts
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)

    def quantiles(self, percentiles: np.ndarray = PERCENTILES) -> np.ndarray:
        """As `np.percentile(values, percentiles)` (linear), to within one bin: the values of a
        bin are taken as spread evenly over it, and the ends are the exact extremes."""
        n = self.total
        if n == 0:
            raise ValueError("no scores to take quantiles of")
        width = (self.hi - self.lo) / len(self.counts)
        ends = np.cumsum(self.counts)  # rank (exclusive) where each bin ends
        ranks = np.asarray(percentiles, float) / 100 * (n - 1)  # 0-based, fractional

        def value(rank: np.ndarray) -> np.ndarray:
            b = np.searchsorted(ends, rank, side="right")  # bin holding this order statistic
            before = ends[b] - self.counts[b]
            within = (rank - before + 0.5) / self.counts[b]
            return self.lo + (b + within) * width

        low, high = np.floor(ranks), np.ceil(ranks)
        out = value(low) + (ranks - low) * (value(high) - value(low))
        return np.clip(out, self.min, self.max)


@dataclass
class Quantiles:
    """Distribution of one scoring's (filtered, masked) scores on the calibration scans."""

    values: np.ndarray  # at PERCENTILES

    def at_percentile(self, percentile: float) -> float:
        return float(np.interp(percentile, PERCENTILES, self.values))

    def at_fpr(self, fpr: float) -> float:
        """The threshold that flags a fraction `fpr` of the calibration scans' scored voxels."""
        if not 0 < fpr < 1:
            raise BrainUADError(f"false-positive rate {fpr}: must be in (0, 1), e.g. 0.05")
        return self.at_percentile(100 * (1 - fpr))


def entry(histogram: ScoreHistogram, subjects: list[str]) -> dict:
    """One scoring's record in threshold.json."""
    return {"quantiles": histogram.quantiles().tolist(), "voxels": histogram.total,
            "range": [histogram.lo, histogram.hi], "subjects": subjects}


def quantiles(info: dict, key: str, where: str) -> Quantiles:
    """The quantiles of scoring `key` from threshold.json `info`, or a clear error naming the
    scorings the model was calibrated for."""
    scoring = info.get("scorings", {}).get(key)
    if scoring is None:
        known = "; ".join(info.get("scorings", {})) or "none"
        raise BrainUADError(f"{where}: no threshold for the scoring {key} (calibrated: {known});"
                            " `brainuad calibrate` adds one")
    return Quantiles(np.array(scoring["quantiles"], dtype=float))


def calibration_subjects(manifest, health: str | None, excluded: dict | None = None,
                         keep: int = 0) -> tuple[str, list]:
    """The scans an operating point is taken on: the `val` split (held out from fitting), or
    the `train` split when the manifest has no validation scans; `(split, subjects)`. With
    `keep` > 0, that many of them, evenly spread (AnoGAN: every slice costs a latent search)."""
    excluded = excluded or {}
    for split in ("val", "train"):
        subjects = [s for s in manifest.select(split=split, health=health)
                    if s.subject not in excluded]
        if 0 < keep < len(subjects):
            chosen = np.linspace(0, len(subjects) - 1, keep).round().astype(int)
            subjects = [subjects[i] for i in chosen]
        if subjects:
            return split, subjects
    raise BrainUADError(f"{manifest.path}: no {health or ''} subjects in the val or train split "
                        "to calibrate the threshold on")


def new_info(histograms: dict[str, ScoreHistogram], split: str, subjects: list[str],
             percentile: float, key: str) -> dict:
    """threshold.json of a newly calibrated model; `key` is its own scoring at fp32."""
    scorings = {k: entry(h, subjects) for k, h in histograms.items()}
    return {"version": VERSION, "percentile": percentile,
            "threshold": Quantiles(np.array(scorings[key]["quantiles"])).at_percentile(
                percentile),
            "calibration": {"split": split, "subjects": subjects},
            "subjects": subjects, "voxels": scorings[key]["voxels"], "scorings": scorings}


def add_scorings(info: dict, histograms: dict[str, ScoreHistogram], subjects: list[str]) -> dict:
    """`info` with more scorings calibrated on `subjects` (those it already has are kept)."""
    scorings = dict(info.get("scorings", {}))
    for key, histogram in histograms.items():
        scorings.setdefault(key, entry(histogram, subjects))
    return {**info, "scorings": scorings}


def best_dice(lesion: ScoreHistogram, normal: ScoreHistogram) -> tuple[float, float]:
    """The best Dice over all thresholds of the scores of lesion and normal voxels pooled over
    many scans (the literature's dataset-level best Dice), and its threshold (a bin edge:
    voxels scoring above it are flagged). Streamed: no scan's voxels are kept."""
    if lesion.total == 0:
        return float("nan"), float("nan")
    true_pos = np.cumsum(lesion.counts[::-1])[::-1]  # flagged lesion voxels, threshold at bin k
    false_pos = np.cumsum(normal.counts[::-1])[::-1]
    dice = 2 * true_pos / (true_pos + false_pos + lesion.total)
    k = int(np.argmax(dice))
    width = (lesion.hi - lesion.lo) / len(lesion.counts)
    return float(dice[k]), lesion.lo + k * width
