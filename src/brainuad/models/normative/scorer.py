"""Scoring against the normative maps: how many spreads each voxel lies from its place's mean
over the training scans (`score: normative`), shaped by `detect.residual` (positive: only the
unusually bright), median filtered on the scan's own voxels."""

from __future__ import annotations

import time

import numpy as np
import torch

from brainuad.config import DetectConfig, RunConfig
from brainuad.data.slices import check_unit_range, plan_slices, slice_region
from brainuad.errors import BrainUADError
from brainuad.io.images import Volume
from brainuad.models.common.normative_maps import FILE, Normative
from brainuad.preprocessing.morphology import dilate
from brainuad.runtime.clock import Stopwatch
from brainuad.scoring.postprocess import (
    Scored,
    hyper_floor,
    masked,
    median_filter,
    shape_residual,
)


class NormativeScorer:
    has_network = False

    def __init__(self, cfg: RunConfig, network: None, maps: Normative | None,
                 device: torch.device) -> None:
        self.cfg, self.maps = cfg, maps

    def score(self, image: Volume, mask: Volume, detect: DetectConfig, precision: str,
              clock: Stopwatch) -> Scored:
        if self.maps is None:
            raise BrainUADError(f"this model has no normative maps ({FILE}); fit them with "
                                "`brainuad train --model normative`")
        start = time.perf_counter()
        check_unit_range(image, mask.data)
        brain = mask.data > 0
        # the scored slices (all with brain, or the paper's 20): no network, so no slice size
        geometry = plan_slices(mask, self.cfg.model.image_size, detect.slices)
        region = slice_region(geometry)
        values = np.clip(image.data, 0, 1) * brain
        z = self.maps.zscore(values, brain, image.affine, detect.normative_floor)
        value = shape_residual(z, values, brain, detect.residual,
                               hyper_floor(image.data, mask.data, detect))
        clock.lap("normative")
        value = median_filter(value * region, detect.median_size,
                              where=dilate(brain) & region)
        clock.lap("median")
        score, scored = masked(value, brain, region, image.spacing, detect)
        return Scored(score, brain & region, scored, time.perf_counter() - start,
                      len(geometry.indices))
