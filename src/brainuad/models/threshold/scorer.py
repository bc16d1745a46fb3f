"""The threshold kind's scorer: a reconstruction of zeros, so the residual is the image."""

from __future__ import annotations

import numpy as np
import torch

from brainuad.config import DetectConfig, RunConfig
from brainuad.data.slices import SubjectSlices
from brainuad.models.common.normative_maps import Normative
from brainuad.models.common.residual import ResidualScorer


class ThresholdScorer(ResidualScorer):
    def __init__(self, cfg: RunConfig, network: None, maps: Normative | None,
                 device: torch.device) -> None:
        self.cfg, self.maps, self.device = cfg, maps, device
        self.has_network = False

    def reconstruct(self, data: SubjectSlices, detect: DetectConfig,
                    precision: str) -> np.ndarray:
        return np.zeros_like(data.images)
