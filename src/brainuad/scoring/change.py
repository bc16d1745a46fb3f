"""Change between two visits of one person, both on one grid: the follow-up against the
baseline, relative to the noise of their difference in normal-appearing white matter, kept only
where a lesion is at the visit that has it (new or enlarging: bright at the follow-up; shrinking
or resolving: bright at the baseline), and every change component typed by what the baseline
had there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainuad.scoring.postprocess import CONNECTIVITY, median_filter, remove_small_components

NEW, ENLARGING, SHRINKING = "new", "enlarging", "shrinking or resolving"
#: change_mask.nii.gz values
CODE = {NEW: 1, ENLARGING: 1, SHRINKING: 2}


@dataclass(frozen=True)
class ChangeConfig:
    """`threshold`: how many spreads of the difference's noise a change must reach;
    `lesion`: how far above its visit's own grey matter (z) a changed voxel must be at the visit
    that has the lesion; `min_voxels`: smaller components (1 mm voxels of the atlas grid) are
    noise; `median_size`: the difference's median filter; `bias_mm` > 0: the difference's
    smooth part (a Gaussian of that sigma inside the brain: what is left of the two visits'
    bias fields) is taken off first. Chosen on the validation pairs: docs/results/compare.md."""

    threshold: float = 5.0
    lesion: float = 2.0
    min_voxels: int = 30
    median_size: int = 3
    bias_mm: float = 6.0


@dataclass
class Change:
    score: np.ndarray  # (X, Y, Z) the difference in spreads of its noise (signed)
    mask: np.ndarray  # (X, Y, Z) uint8: 1 new or enlarging, 2 shrinking or resolving
    components: list[dict]  # per change: type, voxels, label (in `labels`)
    labels: np.ndarray  # (X, Y, Z) int: change components
    noise: float  # the spread of the difference in normal-appearing white matter


def match(moving: np.ndarray, fixed: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`moving` mapped linearly onto `fixed`'s intensities: the line through the medians of
    their darker and brighter halves inside `where` (lesions are too few to move them)."""
    split_m, split_f = np.median(moving[where]), np.median(fixed[where])
    m = [np.median(moving[where & (moving < split_m)]),
         np.median(moving[where & (moving >= split_m)])]
    f = [np.median(fixed[where & (fixed < split_f)]), np.median(fixed[where & (fixed >= split_f)])]
    if m[1] - m[0] <= 1e-6:
        return moving
    return (moving - m[0]) * (f[1] - f[0]) / (m[1] - m[0]) + f[0]


def detect_change(baseline: np.ndarray, followup: np.ndarray, lesion_b: np.ndarray,
                  lesion_f: np.ndarray, brain: np.ndarray, white: np.ndarray,
                  cfg: ChangeConfig) -> Change:
    """Both visits on one grid (intensities matched), each visit's cross-sectional lesion
    z-score (`lesion_b`, `lesion_f`: against its own grey matter), the brain and where the
    white matter is: the change score, mask and typed components."""
    difference = np.where(brain, followup - baseline, 0).astype(np.float32)
    if cfg.bias_mm > 0:  # differential bias correction, weighted by the brain
        weight = ndimage.gaussian_filter(brain.astype(np.float32), cfg.bias_mm)
        smooth = ndimage.gaussian_filter(difference, cfg.bias_mm) / np.maximum(weight, 1e-3)
        difference = np.where(brain, difference - smooth, 0).astype(np.float32)
    difference = median_filter(difference, cfg.median_size, where=ndimage.binary_dilation(brain))
    calm = white & brain & (lesion_b < cfg.lesion) & (lesion_f < cfg.lesion)
    values = difference[calm] if calm.sum() > 100 else difference[brain]
    noise = max(float(1.4826 * np.median(np.abs(values - np.median(values)))), 1e-6)
    score = difference / noise
    grown = remove_small_components((score > cfg.threshold) & (lesion_f > cfg.lesion) & brain,
                                    cfg.min_voxels)
    shrunk = remove_small_components((score < -cfg.threshold) & (lesion_b > cfg.lesion) & brain,
                                     cfg.min_voxels)
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
