"""Change between two visits of one person, both on one grid: the follow-up against the
baseline, relative to the noise of their difference in normal-appearing white matter.

What a change must look like to count, so that a scan against its own rescan (moved, new noise,
a new bias field, its thick slices cut differently) flags nothing:
- the two visits' remaining bias fields divided out (the smooth part of their ratio, then of
  their difference: differential bias correction, Lewis & Fox 2004);
- a seed: the voxel changed lesion status (a lesion at the visit that has it, not at the other)
  and differs from the brightest voxel of the other visit within `tolerance` mm (at least
  `tolerance_slice_fraction` of the thickest slice of the two visits: where a lesion's edge
  lies within a slice is not known) by `threshold` noise spreads: a lesion that only moved by
  a voxel, or lost contrast to partial volume while staying a lesion, has no seed;
- a change component: the plain difference beyond `threshold` where its visit has a lesion,
  within `white_mm` of the atlas's white matter (probability > 0.5) that lies deeper than
  `edge_mm` inside the brain mask (the thick slices' partial volume at the cortex, the
  cerebellum and the brain's outline makes false changes there), with at least `min_seed_mm3`
  seeds: the seeds decide whether a change is real, the plain difference how far it reaches.
  So changes of juxtacortical and infratentorial lesions are not looked for, and the noise of
  the difference is taken in that deep white matter too.
Each component is typed by what the baseline had there (new, enlarging, shrinking/resolving).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainuad.errors import BrainUADError
from brainuad.longitudinal.visits import Visits
from brainuad.preprocessing.intensity import robust_spread
from brainuad.preprocessing.morphology import components, dilate
from brainuad.scoring.postprocess import CONNECTIVITY, median_filter

NEW, ENLARGING, SHRINKING = "new", "enlarging", "shrinking or resolving"
#: the rule, in words, for each pair's summary
RULE = ("after differential bias correction, a change reaches `threshold` spreads of the "
        "difference's noise (normal-appearing white matter), is `lesion` spreads above its "
        "visit's own grey matter, lies within `white_mm` of the atlas's white matter deeper than "
        "`edge_mm` in the brain and holds `min_seed_mm3` of voxels that changed lesion status and "
        "beat the other visit's brightest voxel within `tolerance`; settings chosen on the "
        "validation pairs, the threshold on simulated scan-rescan pairs at the operating point "
        "(docs/models/compare.md)")
#: change_mask.nii.gz values
CODE = {NEW: 1, ENLARGING: 1, SHRINKING: 2}


@dataclass(frozen=True)
class ChangeConfig:
    """`threshold`: how many spreads of the difference's noise a change must reach;
    `lesion`: how far above its visit's own `reference` tissue (z) a changed voxel must be at
    the visit that has the lesion; `min_mm3`: smaller components are noise (at or under
    `min_seed_mm3` it adds nothing: the seeds are voxels of the component); `median_mm`: both
    visits' median filter, its window along each axis; `ratio_mm`, `bias_mm` > 0: the smooth
    part (a Gaussian of that sigma inside the brain) of the visits' log ratio, then of their
    difference, is taken off first; `tolerance`, `white_mm`, `edge_mm` (mm), `min_seed_mm3`:
    see the module; `tolerance_slice_fraction`: the tolerance is at least this fraction of the
    thickest slice of the two visits (0: `tolerance` alone). Chosen on the validation pairs and
    scan-rescan pairs by benchmarks/compare_harness.py: the shipped values are
    `detector.json`'s (every field; `calibration.shipped().config()`), not these defaults."""

    threshold: float = 5.0
    lesion: float = 2.0
    reference: str = "grey"  # each visit's own "grey" or "white" matter
    min_mm3: float = 10.0
    median_mm: float = 3.0
    ratio_mm: float = 8.0
    bias_mm: float = 6.0
    tolerance: float = 1.0
    tolerance_slice_fraction: float = 0.5
    min_seed_mm3: float = 10.0
    white_mm: float = 2.0
    edge_mm: float = 8.0

    def __post_init__(self) -> None:
        if self.reference not in ("grey", "white"):
            raise BrainUADError(f"change reference {self.reference!r}: choose grey or white")
        if self.tolerance < 0 or self.tolerance_slice_fraction < 0:
            raise BrainUADError(f"change tolerance {self.tolerance} mm, slice fraction "
                                f"{self.tolerance_slice_fraction}: must not be negative")


@dataclass
class Change:
    score: np.ndarray  # (X, Y, Z) the difference in spreads of its noise (signed)
    mask: np.ndarray  # (X, Y, Z) uint8: 1 new or enlarging, 2 shrinking or resolving
    components: list[dict]  # per change: type, voxels, label (in `labels`)
    labels: np.ndarray  # (X, Y, Z) int: change components
    noise: float  # the spread of the difference in normal-appearing white matter


@dataclass
class Statistic:
    """What the rule's threshold cuts (`changes_at`): computed once per pair, so the operating
    point can be swept (calibration) without computing it again."""

    score: np.ndarray  # (X, Y, Z) the difference in spreads of its noise (signed)
    grown: np.ndarray  # (X, Y, Z) the follow-up above the baseline's brightest near it, spreads
    shrunk: np.ndarray  # the baseline above the follow-up's brightest near it, spreads
    lesion_baseline: np.ndarray  # bool: where each visit has a lesion (z > `lesion`)
    lesion_followup: np.ndarray
    allowed: np.ndarray  # where changes are looked for
    noise: float
    voxel_mm3: float
    had: np.ndarray  # bool: the baseline's lesions, for typing a growth (`baseline_lesions`)


def statistic(visits: Visits, cfg: ChangeConfig) -> Statistic:
    """The rule's statistic of two visits on one grid (everything but the threshold)."""
    baseline, followup, brain = visits.baseline, visits.followup, visits.brain
    calm, allowed, near = looked_at(visits, cfg)
    followup = without_differential_bias(baseline, followup, brain, cfg, visits.spacing)
    where = dilate(brain)
    # the median's window: about `median_mm` along each axis, an odd count of voxels (one
    # across thick slices: a 6 mm slice's neighbours are not a lesion's)
    counts = [max(1, int(round(cfg.median_mm / s))) for s in visits.spacing]
    window = tuple(n + 1 - n % 2 for n in counts)
    b, f = (median_filter(np.where(brain, v, 0).astype(np.float32), window, where=where)
            for v in (baseline, followup))
    difference = np.where(brain, f - b, 0).astype(np.float32)
    values = difference[calm] if calm.sum() > 100 else difference[brain]
    noise = max(robust_spread(values), 1e-6)
    lesion_b, lesion_f = visits.lesion_maps(cfg.reference)
    voxel_mm3 = float(np.prod(visits.spacing))
    return Statistic((difference / noise).astype(np.float32),
                     ((f - ndimage.maximum_filter(b, footprint=near)) / noise).astype(np.float32),
                     ((b - ndimage.maximum_filter(f, footprint=near)) / noise).astype(np.float32),
                     (lesion_b > cfg.lesion) & brain, (lesion_f > cfg.lesion) & brain, allowed,
                     noise, voxel_mm3,
                     baseline_lesions(median_filter(np.where(brain, lesion_b, 0).astype(
                         np.float32), window, where=where), brain, cfg, voxel_mm3))


#: How far above its reference tissue a baseline voxel must be to belong to a lesion that a
#: growth beside it enlarges. The rule's `lesion` (1.0) takes in bright grey matter, which made
#: most of the synthetic example pair's new lesions "enlarging"; at 2.0 a two-voxel spot of
#: normal tissue (2.4 spreads) still did. Chosen on that example, whose baseline has no
#: lesion; the real pairs' references do not tell new from enlarging, so it is not checked
#: there.
HAD_Z = 3.0


def baseline_lesions(lesion_z: np.ndarray, brain: np.ndarray, cfg: ChangeConfig,
                     voxel_mm3: float) -> np.ndarray:
    """The baseline's lesions: components of at least `cfg.min_mm3` beyond `HAD_Z` (or
    `cfg.lesion`, if higher) spreads above the visit's reference tissue (`lesion_z` median
    filtered as the visits are: a lone bright voxel of grey matter is no lesion)."""
    strong = (lesion_z > max(cfg.lesion, HAD_Z)) & brain
    labels, count = components(strong, full=True)
    big = np.bincount(labels.ravel(), minlength=count + 1) * voxel_mm3 >= cfg.min_mm3
    big[0] = False
    return big[labels]


def candidates(stat: Statistic, threshold: float, growth: bool) -> tuple[np.ndarray, np.ndarray]:
    """Where a growth (or a shrinkage) may lie at `threshold` spreads, and its seeds: the region
    (beyond the threshold, a lesion at the visit that has it, where changes are looked for) and
    the voxels that beat the other visit's brightest near them where it has no lesion (a
    seed inside the region is a voxel that changed lesion status)."""
    if growth:
        return ((stat.score > threshold) & stat.lesion_followup & stat.allowed,
                (stat.grown > threshold) & ~stat.lesion_baseline)
    return ((stat.score < -threshold) & stat.lesion_baseline & stat.allowed,
            (stat.shrunk > threshold) & ~stat.lesion_followup)


def changes_at(stat: Statistic, cfg: ChangeConfig, threshold: float) -> Change:
    """The changes at `threshold` spreads: typed components and their mask."""
    grown = _seeded(*candidates(stat, threshold, True), cfg, stat.voxel_mm3)
    shrunk = _seeded(*candidates(stat, threshold, False), cfg, stat.voxel_mm3)
    mask = np.zeros(stat.score.shape, np.uint8)
    mask[grown], mask[shrunk] = CODE[NEW], CODE[SHRINKING]
    labels, _ = components(mask > 0, full=True)
    # a growth that touches what the baseline already had enlarges a lesion; else it is new
    had = ndimage.binary_dilation(stat.had, structure=CONNECTIVITY)
    touching = set(np.unique(labels[had & grown]).tolist()) - {0}
    found = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        part = labels[box] == index
        if mask[box][part].max() == CODE[SHRINKING]:
            kind = SHRINKING
        else:
            kind = ENLARGING if index in touching else NEW
        found.append({"label": index, "type": kind, "voxels": int(part.sum())})
    return Change(stat.score, mask, found, labels, stat.noise)


def detect_change(visits: Visits, cfg: ChangeConfig) -> Change:
    """The change score, mask and typed components of two visits on one grid."""
    return changes_at(statistic(visits, cfg), cfg, cfg.threshold)


def looked_at(visits: Visits, cfg: ChangeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the difference's noise is taken (`calm`: deep white matter, a lesion at neither
    visit), where changes are looked for (`allowed`) and the seeds' tolerance (`near`: a box of
    `tolerance` mm, at least `tolerance_slice_fraction` of the thickest slice of the two
    visits, each way: whole voxels within it)."""
    brain, wm, spacing = visits.brain, visits.wm, visits.spacing
    if cfg.edge_mm > 0:  # the white matter deep inside the brain, where changes are looked for
        wm = np.where(ndimage.distance_transform_edt(brain, sampling=spacing) > cfg.edge_mm,
                      wm, 0)
    lesion_b, lesion_f = visits.lesion_maps(cfg.reference)
    calm = (wm > 0.9) & brain & (lesion_b < cfg.lesion) & (lesion_f < cfg.lesion)
    allowed = brain & (ndimage.distance_transform_edt(wm <= 0.5, sampling=spacing)
                       <= cfg.white_mm)
    tolerance = max(cfg.tolerance, visits.slice_mm * cfg.tolerance_slice_fraction)
    # whole voxels within the tolerance (none across the grid's own thick slices); the 1e-3
    # keeps a float32 affine's 1.0000001 mm voxel within 1 mm
    half = [int(np.floor(tolerance / s + 1e-3)) for s in spacing]
    return calm, allowed, np.ones([2 * h + 1 for h in half], bool)


def smooth_inside(values: np.ndarray, where: np.ndarray, sigma) -> np.ndarray:
    """A Gaussian of `values` over `where` only (normalised by the mask's own blur); `sigma` in
    voxels (one, or one per axis)."""
    weight = ndimage.gaussian_filter(where.astype(np.float32), sigma)
    blurred = ndimage.gaussian_filter(np.where(where, values, 0).astype(np.float32), sigma)
    return blurred / np.maximum(weight, 1e-3)


def without_differential_bias(baseline: np.ndarray, followup: np.ndarray, brain: np.ndarray,
                              cfg: ChangeConfig, spacing=1.0) -> np.ndarray:
    """The follow-up with what is left of the two visits' bias fields divided out, then the
    smooth part of their difference taken off: after N4 on each visit alone, their ratio still
    drifts by tens of percent near the edges of a scan's field of view. `spacing`: the grid's
    (mm, per axis), the sigmas being mm."""
    spacing = np.broadcast_to(np.asarray(spacing, float), (3,))
    if cfg.ratio_mm > 0:
        both = brain & (baseline > 1e-3) & (followup > 1e-3)
        ratio = np.log(np.maximum(followup, 1e-3) / np.maximum(baseline, 1e-3))
        followup = np.where(brain, followup / np.exp(smooth_inside(ratio, both,
                                                                   cfg.ratio_mm / spacing)),
                            followup)
    if cfg.bias_mm > 0:
        followup = np.where(brain, followup - smooth_inside(followup - baseline, brain,
                                                              cfg.bias_mm / spacing), followup)
    return followup.astype(np.float32)


def _seeded(region: np.ndarray, seeds: np.ndarray, cfg: ChangeConfig,
            voxel_mm3: float) -> np.ndarray:
    """The components of `region` (at least `min_mm3`) holding at least `min_seed_mm3` of
    seeds (`voxel_mm3` a voxel)."""
    labels, count = components(region, full=True)
    if count == 0:
        return region
    seeds_in = np.bincount(labels[seeds], minlength=count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = (seeds_in * voxel_mm3 >= cfg.min_seed_mm3) & (sizes * voxel_mm3 >= cfg.min_mm3)
    keep[0] = False
    return keep[labels]
