"""The FLAIR-intensity threshold: the training-free baseline that published work found hard to
beat. Its "reconstruction" is zero, so its residual is the image itself and it goes through
exactly the paper's detection path."""

from __future__ import annotations

import numpy as np
import torch

from brainuad.config import DetectConfig, RunConfig
from brainuad.data.slices import SubjectSlices
from brainuad.models.common.normative_maps import Normative
from brainuad.models.common.residual import ResidualScorer
from brainuad.models.kind import Kind

_MAPS_FREE = ("median_size", "score", "residual", "hyper_quantile", "erosion_mm", "percentile",
              "min_component", "seed_margin", "normal_sites", "slices")


class ThresholdScorer(ResidualScorer):
    def __init__(self, cfg: RunConfig, network: None, maps: Normative | None,
                 device: torch.device) -> None:
        self.cfg, self.maps, self.device = cfg, maps, device
        self.has_network = False

    def reconstruct(self, data: SubjectSlices, detect: DetectConfig,
                    precision: str) -> np.ndarray:
        return np.zeros_like(data.images)


KIND = Kind(
    name="threshold",
    summary="no training: the brain's own intensities, thresholded",
    presets={"threshold": {"variational": False, "adversarial": False}},
    scores=("residual",),
    fields={"model": ("name", "image_size"), "train": ("modality", "subjects"),
            "detect": _MAPS_FREE},
    scorer=ThresholdScorer,
)
