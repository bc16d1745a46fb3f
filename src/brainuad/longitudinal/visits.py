"""Two visits of one person on one grid, as the change detectors compare them: the follow-up
registered to MNI152 and the baseline rigidly to the follow-up (`preprocessing.pipeline.
register_volumes`), both resampled onto the atlas grid through one interpolation each, denoised
and scaled, the baseline matched to the follow-up's intensities, each visit's lesion z against its
own grey matter; and the check that they are one person's."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from brainuad.errors import BrainUADError
from brainuad.io.images import Volume
from brainuad.preprocessing.atlas import template_affine
from brainuad.preprocessing.pipeline import PreprocessConfig, Registered, scaled
from brainuad.preprocessing.tissues import priors, stats_region, tissue_levels

#: Below this correlation of the two visits inside the brain after rigid registration, they are
#: not one person's: midway between one person's visits (patient03, 12, 19: 0.68-0.95) and six
#: pairs of different people (-0.05-0.30), benchmarks/inputs_check.py --parts v on the raw
#: FLAIRs of ../shared/data (patient01's pair, 0.93, measured and not used to choose).
MIN_SAME_PERSON = 0.5
SAME_PERSON_SEEN, OTHER_PEOPLE_SEEN = "0.68-0.95", "0.30"
#: both visits are FLAIRs: their contrast is checked as segment checks a scan's
FLAIRS = {"baseline": "flair", "followup": "flair"}


@dataclass
class Visits:
    """Both visits on one grid, as `detect_change` compares them."""

    baseline: np.ndarray  # intensities matched to the follow-up's (`match`)
    followup: np.ndarray
    lesion_baseline: np.ndarray  # each visit's lesion z against its own grey matter
    lesion_followup: np.ndarray
    brain: np.ndarray
    wm: np.ndarray  # the atlas's white-matter probability
    correlation: float  # of the two visits inside the eroded brain
    slice_mm: float = 1.0  # the thickest voxel side of the two visits' own grids


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


def on_atlas(registered: Registered, baseline: Volume, followup: Volume,
             cfg: PreprocessConfig) -> Visits:
    """Both registered visits (`baseline`, `followup`: the scans as read) scaled, the baseline
    matched to the follow-up, and each visit's lesion z-score against its own grey matter."""
    brain = registered.mask > 0
    bright = replace(cfg, keep_bright=True)  # the tissue levels need the tail
    f, b = (scaled(registered.images[k], registered.mask, bright, scan.path)
            for k, scan in (("followup", followup), ("baseline", baseline)))
    inner = stats_region(brain, np.ones(3))
    b = match(b, f, inner)
    tissue = priors(Volume(f, template_affine()))
    lesion = {}
    for name, values in (("followup", f), ("baseline", b)):
        levels = tissue_levels(values, inner, tissue, str(followup.path))
        lesion[name] = (values - levels["gm"]) / levels["gm_spread"]
    correlation = float(np.corrcoef(f[inner], b[inner])[0, 1])
    slice_mm = float(max(followup.spacing.max(), baseline.spacing.max()))
    return Visits(b, f, lesion["baseline"], lesion["followup"], brain, tissue["wm"],
                  correlation, slice_mm)


def same_person(correlation: float, baseline: Path, followup: Path, qc: str) -> list[str]:
    """Two visits whose brains correlate below `MIN_SAME_PERSON` after rigid registration are
    not one person's: refused, or a warning with `--qc warn`."""
    if correlation >= MIN_SAME_PERSON:
        return []
    said = (f"{baseline} and {followup} correlate {correlation:.2f} inside the brain after "
            f"rigid registration (one person's visits: {SAME_PERSON_SEEN}; different people's "
            f"at most {OTHER_PEOPLE_SEEN}): not the same person's")
    if qc == "refuse":
        raise BrainUADError(f"{said} (--qc warn compares them anyway)")
    return [said]


