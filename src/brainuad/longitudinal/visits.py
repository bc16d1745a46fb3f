"""Two visits of one person on one grid, as the change detectors compare them: the follow-up's
own grid, so the follow-up is never interpolated and the baseline once (rigidly registered to
it). On the 1 mm atlas grid, where compare worked before, the reference changes of the real
pairs lost about half of their visibility (benchmarks/compare_harness.py,
docs/results/compare.md): the thick slices' detail does not survive two interpolations. The
follow-up is still registered to MNI152, for the registration's QC and for the atlas's tissue
probabilities, which are smooth and carried onto its grid. Then both are scaled (not denoised),
the baseline matched to the follow-up's intensities by a gain, each visit's lesion z taken
against its own grey matter, and the two checked to be one person's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainuad.errors import BrainUADError
from brainuad.io.images import Volume
from brainuad.io.sitk import from_sitk, itk_reason, to_sitk
from brainuad.preprocessing.atlas import template, template_affine
from brainuad.preprocessing.bias import head_mask, n4
from brainuad.preprocessing.brain_mask import BrainMask, own_or_template, scan_brain
from brainuad.preprocessing.intensity import robust_spread
from brainuad.preprocessing.pipeline import PreprocessConfig, scaled
from brainuad.preprocessing.registration import RegistrationConfig, register, to_template
from brainuad.preprocessing.registration_gate import check_quality
from brainuad.preprocessing.tissues import (
    PURE_PRIOR,
    check_contrast,
    priors,
    stats_region,
    tissue_levels,
)
from brainuad.preprocessing.transforms import resample, to_native

#: Below this correlation of the two visits inside the brain after rigid registration, they are
#: not one person's: about midway between one person's visits (patient03, 12, 19: 0.67-0.89 on
#: the follow-up's grid) and six pairs of different people (0.01-0.29),
#: benchmarks/inputs_check.py --parts v on the raw FLAIRs of ../shared/data (patient01's pair,
#: 0.84, measured and not used to choose).
MIN_SAME_PERSON = 0.5
SAME_PERSON_SEEN, OTHER_PEOPLE_SEEN = "0.67-0.89", "0.29"
#: The baseline's rigid registration onto the follow-up: three levels down to full resolution,
#: the metric sampled in the follow-up's brain and 5 mm around it (the neck and the face move
#: between sessions, the brain does not).
PAIR = RegistrationConfig(shrink=(4, 2, 1), smoothing_mm=(2.0, 1.0, 0.0),
                          sampling=(0.2, 0.1, 0.05))
#: N4's shrink for compare: its detector (`detector.json`) was chosen and calibrated with N4
#: fitted on the visits shrunk 4 times. With segment's 6 (flair-ms 6) patient03, left out,
#: lost (benchmarks/compare_harness.py, 5 of its 12 grid rows run: its F1 0.37 -> 0.30 at the
#: shipped settings, 0.28 -> 0.21 at the defaults; docs/results/compare.md), so compare keeps
#: 4 until its detector is chosen again on 6.
N4_SHRINK = 4


def pair_config(cfg: PreprocessConfig) -> PreprocessConfig:
    """`cfg` as compare runs it (N4 at `N4_SHRINK`): what `register_pair` uses and compare's
    outputs record."""
    return replace(cfg, registration=replace(cfg.registration, n4_shrink=N4_SHRINK))


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
    spacing: np.ndarray = field(default_factory=lambda: np.ones(3))  # of their grid (mm)
    #: each visit's z against its own white matter (its level and spread): a lesion is
    #: brighter than the white matter around it even where it is not brighter than grey matter
    bright_baseline: np.ndarray | None = None
    bright_followup: np.ndarray | None = None

    def lesion_maps(self, reference: str) -> tuple[np.ndarray, np.ndarray]:
        """Each visit's lesion z against its own `reference` tissue ("grey" or "white")."""
        if reference == "grey":
            return self.lesion_baseline, self.lesion_followup
        if self.bright_baseline is None or self.bright_followup is None:
            raise ValueError("these visits have no z against their white matter")
        return self.bright_baseline, self.bright_followup


def match(moving: np.ndarray, fixed: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`moving` scaled onto `fixed`'s intensities by the ratio of their medians inside `where`.
    After N4 an MR signal differs between sessions by a gain, not an offset: a line fitted
    through two tissue levels (the two halves' medians) also bends the lesions' contrast, and
    it hid half of patient03's reference changes (benchmarks/compare_harness.py --visibility:
    the changes beyond 3 noise spreads, 14 of 46 with the line, 26 with the ratio)."""
    centre = float(np.median(moving[where]))
    if centre <= 1e-6:
        return moving
    return moving * (float(np.median(fixed[where])) / centre)


@dataclass
class RegisteredPair:
    """A pair on the follow-up's grid: both visits bias corrected, the baseline resampled onto
    it once; the follow-up's brain, the atlas's tissue probabilities there, the atlas ->
    follow-up transform and its plausibility."""

    followup: np.ndarray
    baseline: np.ndarray
    brain: np.ndarray  # bool: the follow-up's brain where the baseline has data too
    tissue: dict[str, np.ndarray]  # "csf", "gm", "wm"
    transform: sitk.AffineTransform  # atlas -> follow-up points
    quality: dict
    brain_source: BrainMask
    seconds: dict[str, float] = field(default_factory=dict)


def register_pair(baseline: Volume, followup: Volume, cfg: PreprocessConfig) -> RegisteredPair:
    """Both visits on the follow-up's grid (see the module), their contrast checked."""
    seconds, start = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal start
        seconds[stage] = time.perf_counter() - start
        start = time.perf_counter()

    cfg = pair_config(cfg)
    reg = cfg.registration
    images = {}
    for name, volume in (("followup", followup), ("baseline", baseline)):
        try:
            image = to_sitk(volume.data, volume.affine)
            images[name] = n4(image, head_mask(image), reg)
        except RuntimeError as err:
            raise BrainUADError(f"{volume.path}: N4 bias correction failed "
                                f"({itk_reason(err)})") from err
    lap("N4")
    grid = images["followup"]
    transform, quality = to_template(grid, reg, str(followup.path))
    check_quality(quality, reg, str(followup.path))
    lap("registration to MNI152")
    brain, source = _brain(followup, grid, transform, cfg)
    lap("brain mask")
    region = sitk.BinaryDilate(sitk.Cast(to_sitk(brain.astype(np.uint8), followup.affine),
                                         sitk.sitkUInt8),
                               [max(1, round(5 / s)) for s in grid.GetSpacing()])
    to_baseline = register(grid, images["baseline"], PAIR,
                           f"{baseline.path} to {followup.path}", fixed_mask=region,
                           affine=False)
    moved = resample(images["baseline"], grid, to_baseline)
    covered = from_sitk(resample(to_sitk(np.ones(baseline.shape, np.float32), baseline.affine),
                                 grid, to_baseline))[0] > 0.99
    lap("baseline onto the follow-up")
    on_template = priors(Volume(from_sitk(template()[1])[0], template_affine()))
    tissue = {k: to_native(v, template_affine(), grid, transform) for k, v in on_template.items()}
    pair = RegisteredPair(from_sitk(grid)[0], from_sitk(moved)[0], brain & covered, tissue,
                          transform, quality, source, seconds)
    for name, volume in (("followup", followup), ("baseline", baseline)):
        check_contrast(getattr(pair, name), pair.brain, tissue, followup.spacing, "flair",
                       str(volume.path))
    lap("tissues")
    return pair


def _brain(followup: Volume, grid: sitk.Image, transform: sitk.Transform,
           cfg: PreprocessConfig) -> tuple[np.ndarray, BrainMask]:
    """The follow-up's brain on its grid: deepbet's, or the template's carried by the
    registration where deepbet fails or the two disagree (`own_or_template`, as
    `preprocessing.pipeline` does on the atlas grid), or the template's with
    `cfg.brain_mask` "template"."""
    carried = to_native(from_sitk(template()[1])[0].astype(np.float32), template_affine(), grid,
                        transform, nearest=True) > 0.5
    if cfg.brain_mask != "scan":
        return carried, BrainMask("template")
    return own_or_template(lambda: scan_brain(followup), carried)


def on_followup_grid(pair: RegisteredPair, baseline: Volume, followup: Volume,
                     cfg: PreprocessConfig) -> Visits:
    """Both registered visits (`baseline`, `followup`: the scans as read) scaled, the baseline
    matched to the follow-up, and each visit's lesion z against its own grey matter. No
    CurvatureFlow here (segment's models were trained with it): it flattens small faint
    changes more than the noise of the difference (patient12: 24 of 46 reference changes
    beyond 3 noise spreads with it, 31 without; --visibility)."""
    brain = pair.brain
    # the tissue levels need the bright tail
    bright = replace(cfg, keep_bright=True, curvature_iterations=0)
    f, b = (scaled(image, brain, bright, scan.path) for image, scan in
            ((pair.followup, followup), (pair.baseline, baseline)))
    inner = stats_region(brain, followup.spacing)
    b = match(b, f, inner)
    lesion, bright = {}, {}
    white = inner & (pair.tissue["wm"] > PURE_PRIOR)
    for name, values, scan in (("followup", f, followup), ("baseline", b, baseline)):
        levels = tissue_levels(values, inner, pair.tissue, str(scan.path))
        lesion[name] = (values - levels["gm"]) / levels["gm_spread"]
        spread = max(robust_spread(values[white], levels["wm"]), 1e-3)
        bright[name] = ((values - levels["wm"]) / spread).astype(np.float32)
    correlation = float(np.corrcoef(f[inner], b[inner])[0, 1])
    slice_mm = float(max(followup.spacing.max(), baseline.spacing.max()))
    return Visits(b.astype(np.float32), f.astype(np.float32), lesion["baseline"],
                  lesion["followup"], brain, pair.tissue["wm"], correlation, slice_mm,
                  np.asarray(followup.spacing, float), bright["baseline"], bright["followup"])


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


