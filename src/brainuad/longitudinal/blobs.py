"""Changes as blobs of the two visits' difference at lesion scales: a matched statistic.

Voxel by voxel, most real changes between two FLAIRs lie within a few noise spreads of their
difference; averaged over a lesion-sized region they stand out (benchmarks/compare_limits.py,
part o). So the difference (after the visits' remaining bias fields are divided out, as
`change.py` does) is smoothed by Gaussians of lesion scales (`scales_mm`), each smoothed map
divided by its own noise (its robust spread in calm deep white matter: the spatially correlated
noise of each scale is measured, not assumed), and a voxel's statistic is the largest of these
z-scores over the scales (with its sign). Smoothing also makes the statistic robust to where a
lesion's edge falls within a thick slice: linear partial volume moves brightness between
neighbouring voxels without changing its sum, which a kernel wider than the slice integrates.

A change is a connected region of the statistic beyond `low` spreads, of one sign, where the
visit that has the lesion shows one (its own lesion z against its grey matter beyond `lesion`),
in the deep white matter (`edge_mm`, `white_mm`), of at least `min_voxels`; it is reported when
its peak statistic beyond `threshold`, the operating point, calibrated on scan-rescan pairs
(`calibration.py`): the statistic is computed once and thresholded at any level cheaply.
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
from brainuad.preprocessing.morphology import bounding_box
from brainuad.scoring.postprocess import CONNECTIVITY


@dataclass(frozen=True)
class BlobConfig:
    """`scales_mm`: the Gaussians' sigmas (mm of the 1 mm atlas grid); `low`: a change's extent,
    where the statistic stays beyond this many spreads; `lesion`: the lesion z (against the
    visit's own grey matter, smoothed by 1 mm) the visit that has the change must reach there;
    `min_voxels`: smaller regions are noise; `ratio_mm`, `bias_mm`: the differential bias
    correction of `change.without_differential_bias`; `edge_mm`, `white_mm`: changes are looked
    for within `white_mm` of the atlas's white matter deeper than `edge_mm` in the brain;
    `threshold`: the operating point (a change's peak statistic)."""

    scales_mm: tuple[float, ...] = (1.0, 2.0, 3.0)
    low: float = 2.0
    lesion: float = 1.0
    min_voxels: int = 10
    ratio_mm: float = 8.0
    bias_mm: float = 6.0
    edge_mm: float = 8.0
    white_mm: float = 2.0
    threshold: float = 5.0


@dataclass
class Statistic:
    """A pair's statistic and its candidate changes, thresholded by `changes_at`."""

    z: np.ndarray  # (X, Y, Z) signed, the largest |z| over the scales
    labels: np.ndarray  # (X, Y, Z) int: candidate regions, growth and shrinkage apart
    peaks: np.ndarray  # per region (index 0 unused): its peak |z|
    sizes: np.ndarray  # per region: voxels
    kinds: list[str]  # per region (index 0 unused): NEW, ENLARGING or SHRINKING
    noise: float  # the finest scale's spread


def statistic(visits: Visits, cfg: BlobConfig) -> Statistic:
    """The statistic of two visits on one grid and their candidate changes."""
    brain = visits.brain
    margin = int(np.ceil(3 * max(cfg.scales_mm, default=1.0))) + 1
    box = bounding_box(brain, margin) or tuple(slice(None) for _ in brain.shape)
    inner = brain[box]
    baseline, followup = visits.baseline[box], visits.followup[box]
    lesion_b, lesion_f = visits.lesion_baseline[box], visits.lesion_followup[box]
    followup = without_differential_bias(baseline, followup, inner, _bias(cfg))
    difference = np.where(inner, followup - baseline, 0).astype(np.float32)
    wm = visits.wm[box]
    deep = ndimage.distance_transform_edt(inner) > cfg.edge_mm
    calm = inner & deep & (wm > 0.9) & (lesion_b < 2) & (lesion_f < 2)
    if calm.sum() < 1000:
        calm = inner
    z, noises = np.zeros(difference.shape, np.float32), []
    for sigma in cfg.scales_mm:
        smoothed = smooth_inside(difference, inner, sigma) * inner
        noise = max(robust_spread(smoothed[calm]), 1e-6)
        noises.append(noise)
        scaled = smoothed / noise
        z = np.where(np.abs(scaled) > np.abs(z), scaled, z).astype(np.float32)
    allowed = inner & (ndimage.distance_transform_edt(np.where(deep, wm, 0) <= 0.5)
                       <= cfg.white_mm)
    at_b, at_f = (smooth_inside(v, inner, 1.0) for v in (lesion_b, lesion_f))
    grown = (z > cfg.low) & (at_f > cfg.lesion) & allowed
    shrunk = (z < -cfg.low) & (at_b > cfg.lesion) & allowed
    labels = np.zeros(inner.shape, np.int32)
    kinds, peaks, sizes = [""], [0.0], [0]
    had = ndimage.binary_dilation((at_b > cfg.lesion) & inner, structure=CONNECTIVITY)
    for region, sign in ((grown, 1), (shrunk, -1)):
        part, count = ndimage.label(region, structure=CONNECTIVITY)
        if count == 0:
            continue
        where = np.flatnonzero(part)
        index = part.ravel()[where]
        peak = np.zeros(count + 1, np.float32)
        np.maximum.at(peak, index, sign * z.ravel()[where])
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
    return Statistic(z_full, full, np.asarray(peaks), np.asarray(sizes), kinds, noises[0])


def changes_at(stat: Statistic, threshold: float, min_voxels: int) -> Change:
    """The changes whose peak statistic is beyond `threshold` (and of `min_voxels`)."""
    keep = (stat.peaks > threshold) & (stat.sizes >= min_voxels)
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
    return changes_at(statistic(visits, cfg), cfg.threshold, cfg.min_voxels)


def _bias(cfg: BlobConfig):
    """The differential bias correction's settings as `change.without_differential_bias` takes
    them."""
    from brainuad.longitudinal.change import ChangeConfig

    return ChangeConfig(ratio_mm=cfg.ratio_mm, bias_mm=cfg.bias_mm)
