"""Scoring a scan against its own tissues: how many spreads a voxel lies above the scan's own
grey matter, the brightest healthy tissue of a FLAIR. Nothing is learnt from other scans, so a
scanner or protocol that shifts every tissue's brightness shifts the reference with it.

The grey matter's level and spread are taken where the atlas says grey matter (its prior above
`GM_PRIOR`, inside the eroded brain), leaving out the voxels darker than halfway between the
scan's CSF and white matter (CSF mixed in by partial volume or a registration a few mm off): the
median and the MAD, which lesions (a few % of those voxels at most) hardly move.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy import ndimage

from brainuad.config import DetectConfig, RunConfig
from brainuad.data.slices import check_unit_range, plan_slices, slice_region
from brainuad.errors import BrainUADError
from brainuad.io.images import Volume
from brainuad.models.normative.maps import resample
from brainuad.preprocessing.atlas import atlas, grid_resolution
from brainuad.runtime.clock import Stopwatch
from brainuad.scoring.postprocess import (
    Scored,
    eroded_mask,
    hyper_floor,
    masked,
    median_filter,
    shape_residual,
)

#: Atlas probabilities above which a voxel counts as that tissue for the scan's own statistics.
GM_PRIOR, PURE_PRIOR = 0.7, 0.9
#: Where the statistics are taken: the brain eroded by this much (no skull, no partial volume).
STATS_EROSION_MM = 3.0


def priors(image: Volume) -> dict[str, np.ndarray]:
    """The atlas's CSF, grey and white matter probabilities on the scan's (atlas) grid."""
    resolution = grid_resolution(image.shape, image.affine)
    maps = atlas(resolution or 1)
    if resolution is not None:
        return {k: maps[k] for k in ("csf", "gm", "wm")}
    return {k: resample(maps[k], maps["affine"], image.shape, image.affine)
            for k in ("csf", "gm", "wm")}


def tissue_levels(values: np.ndarray, brain: np.ndarray, tissue: dict[str, np.ndarray],
                  spacing: np.ndarray, where: str = "") -> dict[str, float]:
    """The scan's own CSF, white and grey matter levels, and the grey matter's spread."""
    inner = eroded_mask(brain, spacing, STATS_EROSION_MM)
    csf, wm = (values[inner & (tissue[k] > PURE_PRIOR)] for k in ("csf", "wm"))
    if csf.size < 100 or wm.size < 100:
        raise BrainUADError(f"{where}: too little CSF or white matter where the atlas has them "
                            "to take the scan's own tissue levels (is it registered?)")
    levels = {"csf": float(np.median(csf)), "wm": float(np.median(wm))}
    grey = values[inner & (tissue["gm"] > GM_PRIOR)
                  & (values > (levels["csf"] + levels["wm"]) / 2)]
    if grey.size < 100:
        raise BrainUADError(f"{where}: too little grey matter to take its level")
    levels["gm"] = float(np.median(grey))
    levels["gm_spread"] = max(float(1.4826 * np.median(np.abs(grey - levels["gm"]))), 1e-3)
    return levels


class TissueScorer:
    has_network = False

    def __init__(self, cfg: RunConfig, network: None, maps: None,
                 device: torch.device) -> None:
        self.cfg = cfg
        self.levels: dict[str, float] = {}  # of the last scan scored

    def score(self, image: Volume, mask: Volume, detect: DetectConfig, precision: str,
              clock: Stopwatch) -> Scored:
        start = time.perf_counter()
        check_unit_range(image, mask.data)
        brain = mask.data > 0
        geometry = plan_slices(mask, self.cfg.model.image_size, detect.slices)
        region = slice_region(geometry)
        values = np.clip(image.data, 0, None) * brain  # bright voxels kept above 1
        self.levels = tissue_levels(values, brain, priors(image), image.spacing,
                                    str(image.path or ""))
        z = (values - self.levels["gm"]) / self.levels["gm_spread"]
        value = shape_residual(z, values, brain, detect.residual,
                               hyper_floor(image.data, mask.data, detect))
        clock.lap("tissue levels")
        value = median_filter((value * region).astype(np.float32), detect.median_size,
                              where=ndimage.binary_dilation(brain) & region)
        clock.lap("median")
        score, scored = masked(value, brain, region, image.spacing, detect)
        return Scored(score, brain & region, scored, time.perf_counter() - start,
                      len(geometry.indices))
