"""Change between two visits of one person, both on one grid: the follow-up against the
baseline, relative to the noise of their difference in normal-appearing white matter.

What a change must look like to count, so that a scan against its own rescan (moved, new noise,
a new bias field, its thick slices cut differently) flags nothing:
- the two visits' remaining bias fields divided out (the smooth part of their ratio, then of
  their difference: differential bias correction, Lewis & Fox 2004);
- a seed: the voxel changed lesion status (a lesion at the visit that has it, not at the other)
  and differs from the brightest voxel of the other visit within `tolerance` voxels (at least
  half the thickest slice of the two visits: where a lesion's edge lies within a slice is not
  known) by `threshold` noise spreads: a lesion that only moved by a voxel, or lost contrast to
  partial volume while staying a lesion, has no seed;
- a change component: the plain difference beyond `threshold` where its visit has a lesion,
  within `white_mm` of the atlas's white matter (probability > 0.5) that lies deeper than
  `edge_mm` inside the brain mask (the thick slices' partial volume at the cortex, the
  cerebellum and the brain's outline makes false changes there), with at least `min_seed`
  seeds: the seeds decide whether a change is real, the plain difference how far it reaches.
  So changes of juxtacortical and infratentorial lesions are not looked for, and the noise of
  the difference is taken in that deep white matter too.
Each component is typed by what the baseline had there (new, enlarging, shrinking/resolving).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainuad.longitudinal.visits import Visits
from brainuad.preprocessing.intensity import robust_spread
from brainuad.preprocessing.morphology import dilate
from brainuad.scoring.postprocess import CONNECTIVITY, median_filter

NEW, ENLARGING, SHRINKING = "new", "enlarging", "shrinking or resolving"
#: the rule, in words, for each pair's summary
RULE = ("after differential bias correction, a change reaches `threshold` spreads of the "
        "difference's noise (normal-appearing white matter), is `lesion` spreads above its "
        "visit's own grey matter, lies within `white_mm` of the atlas's white matter deeper than "
        "`edge_mm` in the brain and holds `min_seed` voxels that changed lesion status and beat "
        "the other visit's brightest voxel within `tolerance`; settings chosen on scan-rescan "
        "and validation pairs (min_voxels leave one pair out; docs/results/compare.md)")
#: change_mask.nii.gz values
CODE = {NEW: 1, ENLARGING: 1, SHRINKING: 2}


@dataclass(frozen=True)
class ChangeConfig:
    """`threshold`: how many spreads of the difference's noise a change must reach;
    `lesion`: how far above its visit's own grey matter (z) a changed voxel must be at the visit
    that has the lesion; `min_voxels`: smaller components (1 mm voxels of the atlas grid) are
    noise (at or under `min_seed` it adds nothing: the seeds are voxels of the component);
    `median_size`: both visits' median filter; `ratio_mm`, `bias_mm` > 0: the smooth part (a
    Gaussian of that sigma inside the brain) of the visits' log ratio, then of their difference,
    is taken off first; `tolerance`, `min_seed`, `white_mm`, `edge_mm` (mm of the
    1 mm atlas grid): see the module. Chosen on scan-rescan pairs and the validation pairs
    (`min_voxels` leave one pair out): docs/results/compare.md."""

    threshold: float = 5.0
    lesion: float = 2.0
    min_voxels: int = 10
    median_size: int = 3
    ratio_mm: float = 8.0
    bias_mm: float = 6.0
    tolerance: int = 1
    min_seed: int = 10
    white_mm: float = 2.0
    edge_mm: float = 8.0


@dataclass
class Change:
    score: np.ndarray  # (X, Y, Z) the difference in spreads of its noise (signed)
    mask: np.ndarray  # (X, Y, Z) uint8: 1 new or enlarging, 2 shrinking or resolving
    components: list[dict]  # per change: type, voxels, label (in `labels`)
    labels: np.ndarray  # (X, Y, Z) int: change components
    noise: float  # the spread of the difference in normal-appearing white matter


def detect_change(visits: Visits, cfg: ChangeConfig) -> Change:
    """The change score, mask and typed components of two visits on one grid."""
    baseline, followup, brain = visits.baseline, visits.followup, visits.brain
    lesion_b, lesion_f = visits.lesion_baseline, visits.lesion_followup
    calm, allowed, near = looked_at(visits, cfg)
    followup = without_differential_bias(baseline, followup, brain, cfg)
    where = dilate(brain)
    b, f = (median_filter(np.where(brain, v, 0).astype(np.float32), cfg.median_size,
                          where=where) for v in (baseline, followup))
    difference = np.where(brain, f - b, 0).astype(np.float32)
    values = difference[calm] if calm.sum() > 100 else difference[brain]
    noise = max(robust_spread(values), 1e-6)
    score = difference / noise
    grown = _seeded((score > cfg.threshold) & (lesion_f > cfg.lesion) & allowed,
                    (f - ndimage.maximum_filter(b, footprint=near) > cfg.threshold * noise)
                    & (lesion_b < cfg.lesion), cfg)
    shrunk = _seeded((score < -cfg.threshold) & (lesion_b > cfg.lesion) & allowed,
                     (b - ndimage.maximum_filter(f, footprint=near) > cfg.threshold * noise)
                     & (lesion_f < cfg.lesion), cfg)
    mask = np.zeros(brain.shape, np.uint8)
    mask[grown], mask[shrunk] = CODE[NEW], CODE[SHRINKING]
    labels, _ = ndimage.label(mask > 0, structure=CONNECTIVITY)
    # a growth that touches what the baseline already had enlarges a lesion; else it is new
    had = ndimage.binary_dilation((lesion_b > cfg.lesion) & brain, structure=CONNECTIVITY)
    touching = set(np.unique(labels[had & grown]).tolist()) - {0}
    components = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        part = labels[box] == index
        if mask[box][part].max() == CODE[SHRINKING]:
            kind = SHRINKING
        else:
            kind = ENLARGING if index in touching else NEW
        components.append({"label": index, "type": kind, "voxels": int(part.sum())})
    return Change(score.astype(np.float32), mask, components, labels, noise)


def looked_at(visits: Visits, cfg: ChangeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the difference's noise is taken (`calm`: deep white matter, a lesion at neither
    visit), where changes are looked for (`allowed`) and the seeds' tolerance (`near`, a cube of
    voxels of the 1 mm grid)."""
    brain, wm = visits.brain, visits.wm
    if cfg.edge_mm > 0:  # the white matter deep inside the brain, where changes are looked for
        wm = np.where(ndimage.distance_transform_edt(brain) > cfg.edge_mm, wm, 0)
    calm = ((wm > 0.9) & brain & (visits.lesion_baseline < cfg.lesion)
            & (visits.lesion_followup < cfg.lesion))
    allowed = brain & (ndimage.distance_transform_edt(wm <= 0.5) <= cfg.white_mm)
    tolerance = max(cfg.tolerance, int(visits.slice_mm // 2))
    return calm, allowed, np.ones((2 * tolerance + 1,) * 3, bool)


def smooth_inside(values: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian of `values` over `where` only (normalised by the mask's own blur)."""
    weight = ndimage.gaussian_filter(where.astype(np.float32), sigma)
    blurred = ndimage.gaussian_filter(np.where(where, values, 0).astype(np.float32), sigma)
    return blurred / np.maximum(weight, 1e-3)


def without_differential_bias(baseline: np.ndarray, followup: np.ndarray, brain: np.ndarray,
                              cfg: ChangeConfig) -> np.ndarray:
    """The follow-up with what is left of the two visits' bias fields divided out, then the
    smooth part of their difference taken off: after N4 on each visit alone, their ratio still
    drifts by tens of percent near the edges of a scan's field of view."""
    if cfg.ratio_mm > 0:
        both = brain & (baseline > 1e-3) & (followup > 1e-3)
        ratio = np.log(np.maximum(followup, 1e-3) / np.maximum(baseline, 1e-3))
        followup = np.where(brain, followup / np.exp(smooth_inside(ratio, both, cfg.ratio_mm)),
                            followup)
    if cfg.bias_mm > 0:
        followup = np.where(brain, followup - smooth_inside(followup - baseline, brain,
                                                              cfg.bias_mm), followup)
    return followup.astype(np.float32)


def _seeded(region: np.ndarray, seeds: np.ndarray, cfg: ChangeConfig) -> np.ndarray:
    """The components of `region` (at least `min_voxels`) holding at least `min_seed` seeds."""
    labels, count = ndimage.label(region, structure=CONNECTIVITY)
    if count == 0:
        return region
    seeds_in = np.bincount(labels[seeds], minlength=count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = (seeds_in >= cfg.min_seed) & (sizes >= cfg.min_voxels)
    keep[0] = False
    return keep[labels]
