"""Changes as blobs of the two visits' difference at lesion scales: a matched statistic.

Voxel by voxel, most real changes between two FLAIRs lie within a few noise spreads of their
difference; averaged over a lesion-sized region they stand out (the oracle of
benchmarks/compare_harness.py). So the difference (after the visits' remaining bias fields are
divided out, as `change.py` does) is smoothed by Gaussians of lesion scales (`scales_mm`), each
smoothed map divided by its own noise (its robust spread in calm deep white matter: the
spatially correlated noise of each scale is measured, not assumed), and a voxel's statistic is
the largest of these z-scores over the scales (with its sign). Smoothing also makes the
statistic robust to where a lesion's edge falls within a thick slice: linear partial volume
moves brightness between neighbouring voxels without changing its sum, which a kernel wider
than the slice integrates.

A change is a connected region of the statistic beyond `low` spreads, of one sign, where the
visit that has the lesion shows one (its own lesion z against its grey matter beyond `lesion`),
in the deep white matter (`edge_mm`, `white_mm`), of at least `min_mm3`; it is reported when
its peak statistic beyond `threshold`, the operating point, calibrated on scan-rescan pairs
by benchmarks/compare_harness.py: the statistic is computed once and thresholded at any level
cheaply. Evaluated there and not shipped (issue 39: it needed 10-15 spreads to keep the
rescans quiet; docs/results/compare.md); compare runs `change.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainuad.longitudinal.change import (
    CODE,
    ENLARGING,
    NEW,
    SHRINKING,
    Change,
    smooth_inside,
    without_differential_bias,
)
from brainuad.longitudinal.visits import Visits
from brainuad.preprocessing.intensity import robust_spread
from brainuad.preprocessing.morphology import bounding_box, components
from brainuad.scoring.postprocess import CONNECTIVITY


@dataclass(frozen=True)
class BlobConfig:
    """`scales_mm`: the Gaussians' sigmas (mm of the 1 mm atlas grid); `low`: a change's extent,
    where the statistic stays beyond this many spreads; `lesion`: the lesion z (against the
    visit's own grey matter, smoothed by 1 mm) the visit that has the change must reach there;
    `min_mm3`: smaller regions are noise; `ratio_mm`, `bias_mm`: the differential bias
    correction of `change.without_differential_bias`; `edge_mm`, `white_mm`: changes are looked
    for within `white_mm` of the atlas's white matter deeper than `edge_mm` in the brain;
    `threshold`: the operating point (a change's peak statistic)."""

    scales_mm: tuple[float, ...] = (1.0, 2.0, 3.0)
    low: float = 2.0
    lesion: float = 1.0
    min_mm3: float = 10.0
    ratio_mm: float = 8.0
    bias_mm: float = 6.0
    edge_mm: float = 8.0
    white_mm: float = 2.0
    threshold: float = 5.0
    #: the sharper visit blurred to the other's resolution (`matched_blur`) before the
    #: difference: two visits resampled differently (another slice orientation, one more
    #: interpolation) differ most where the brain has detail, lesions first
    match_blur: bool = False
    #: growth is the follow-up against the brightest of the baseline within this many mm (and
    #: shrinkage the other way round): a lesion moved or blurred by less is no change
    tolerance_mm: float = 1.0


@dataclass
class Statistic:
    """A pair's statistic and its candidate changes, thresholded by `changes_at`."""

    z: np.ndarray  # (X, Y, Z) signed, the largest |z| over the scales
    labels: np.ndarray  # (X, Y, Z) int: candidate regions, growth and shrinkage apart
    peaks: np.ndarray  # per region (index 0 unused): its peak |z|
    sizes: np.ndarray  # per region: voxels
    kinds: list[str]  # per region (index 0 unused): NEW, ENLARGING or SHRINKING
    noise: float  # the finest scale's spread
    voxel_mm3: float = 1.0


def statistic(visits: Visits, cfg: BlobConfig) -> Statistic:
    """The statistic of two visits on one grid and their candidate changes."""
    brain, spacing = visits.brain, np.asarray(visits.spacing, float)
    margin = int(np.ceil(3 * max(cfg.scales_mm, default=1.0) / spacing.min())) + 1
    box = bounding_box(brain, margin) or tuple(slice(None) for _ in brain.shape)
    inner = brain[box]
    baseline, followup = visits.baseline[box], visits.followup[box]
    lesion_b, lesion_f = visits.lesion_baseline[box], visits.lesion_followup[box]
    followup = without_differential_bias(baseline, followup, inner, _bias(cfg), spacing)
    if cfg.match_blur:
        baseline, followup = matched_blur(baseline, followup, inner, spacing)
    wm = visits.wm[box]
    deep = ndimage.distance_transform_edt(inner, sampling=spacing) > cfg.edge_mm
    calm = inner & deep & (wm > 0.9) & (lesion_b < 2) & (lesion_f < 2)
    if calm.sum() < 1000:
        calm = inner
    # growth: the follow-up brighter than the baseline (than all of it within the tolerance);
    # shrinkage the other way round
    half = [int(np.floor(cfg.tolerance_mm / s + 1e-3)) for s in spacing]
    near = np.ones([2 * h + 1 for h in half], bool)
    evidence = {}
    for name, (x, y) in (("grown", (followup, baseline)), ("shrunk", (baseline, followup))):
        other = ndimage.maximum_filter(y, footprint=near) if near.size > 1 else y
        evidence[name], noise = _scales(np.where(inner, x - other, 0).astype(np.float32),
                                        inner, calm, cfg.scales_mm, spacing)
    allowed = inner & (ndimage.distance_transform_edt(np.where(deep, wm, 0) <= 0.5,
                                                      sampling=spacing) <= cfg.white_mm)
    at_b, at_f = (smooth_inside(v, inner, 1.0 / spacing) for v in (lesion_b, lesion_f))
    grown = (evidence["grown"] > cfg.low) & (at_f > cfg.lesion) & allowed
    shrunk = (evidence["shrunk"] > cfg.low) & (at_b > cfg.lesion) & allowed
    z = np.where(evidence["grown"] >= evidence["shrunk"], evidence["grown"],
                 -evidence["shrunk"]).astype(np.float32)
    labels = np.zeros(inner.shape, np.int32)
    kinds, peaks, sizes = [""], [0.0], [0]
    had = ndimage.binary_dilation((at_b > cfg.lesion) & inner, structure=CONNECTIVITY)
    for region, sign, name in ((grown, 1, "grown"), (shrunk, -1, "shrunk")):
        part, count = components(region, full=True)
        if count == 0:
            continue
        where = np.flatnonzero(part)
        index = part.ravel()[where]
        peak = np.zeros(count + 1, np.float32)
        np.maximum.at(peak, index, evidence[name].ravel()[where])
        size = np.bincount(index, minlength=count + 1)
        touching = np.zeros(count + 1, bool)
        touching[np.unique(part[had & region])] = True
        offset = len(kinds) - 1
        labels[part > 0] = part[part > 0] + offset
        peaks += peak[1:].tolist()
        sizes += size[1:].tolist()
        kinds += [SHRINKING if sign < 0 else ENLARGING if touching[i] else NEW
                  for i in range(1, count + 1)]
    full = np.zeros(brain.shape, np.int32)
    full[box] = labels
    z_full = np.zeros(brain.shape, np.float32)
    z_full[box] = z
    return Statistic(z_full, full, np.asarray(peaks), np.asarray(sizes), kinds, noise,
                     float(np.prod(spacing)))


def _scales(difference: np.ndarray, inner: np.ndarray, calm: np.ndarray,
            scales_mm: tuple[float, ...], spacing: np.ndarray) -> tuple[np.ndarray, float]:
    """The largest z over the scales of `difference` smoothed by each (inside `inner`), each in
    spreads of its own noise around its median in `calm`; and the finest scale's spread."""
    best, first = None, None
    for sigma in scales_mm:
        smoothed = smooth_inside(difference, inner, sigma / spacing) * inner
        centre = float(np.median(smoothed[calm]))
        noise = max(robust_spread(smoothed[calm], centre), 1e-6)
        first = noise if first is None else first
        z = ((smoothed - centre) / noise * inner).astype(np.float32)
        best = z if best is None else np.maximum(best, z)
    return best, first


#: the Gaussians (sigma, mm) tried on the sharper visit by `matched_blur`
BLURS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


def matched_blur(baseline: np.ndarray, followup: np.ndarray, brain: np.ndarray,
                 spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both visits at one resolution: the one whose Gaussian blur (of `BLURS`, or none) brings
    the two closest (the least robust spread of their difference inside the eroded brain:
    changes, a few per cent of it, hardly move that) is blurred by it."""
    inner = ndimage.binary_erosion(brain, iterations=2)
    best = (robust_spread((followup - baseline)[inner]), baseline, followup)
    for sigma in BLURS:
        for blurred_baseline in (True, False):
            sigmas = sigma / np.asarray(spacing, float)
            b = ndimage.gaussian_filter(baseline, sigmas) if blurred_baseline else baseline
            f = followup if blurred_baseline else ndimage.gaussian_filter(followup, sigmas)
            spread = robust_spread((f - b)[inner])
            if spread < best[0]:
                best = (spread, b, f)
    return best[1], best[2]


def changes_at(stat: Statistic, threshold: float, min_mm3: float) -> Change:
    """The changes whose peak statistic is beyond `threshold` (and of `min_mm3`)."""
    keep = (stat.peaks > threshold) & (stat.sizes * stat.voxel_mm3 >= min_mm3)
    keep[0] = False
    kept = np.flatnonzero(keep)
    number = np.zeros(len(keep), np.int32)
    number[kept] = np.arange(1, len(kept) + 1)
    labels = number[stat.labels]
    codes = np.zeros(len(keep), np.uint8)
    codes[kept] = [CODE[stat.kinds[i]] for i in kept]
    mask = codes[stat.labels]
    components = [{"label": n + 1, "type": stat.kinds[i], "voxels": int(stat.sizes[i]),
                   "peak": float(stat.peaks[i])} for n, i in enumerate(kept)]
    return Change(stat.z, mask, components, labels, stat.noise)


def detect_blobs(visits: Visits, cfg: BlobConfig) -> Change:
    return changes_at(statistic(visits, cfg), cfg.threshold, cfg.min_mm3)


def _bias(cfg: BlobConfig):
    """The differential bias correction's settings as `change.without_differential_bias` takes
    them."""
    from brainuad.longitudinal.change import ChangeConfig

    return ChangeConfig(ratio_mm=cfg.ratio_mm, bias_mm=cfg.bias_mm)
