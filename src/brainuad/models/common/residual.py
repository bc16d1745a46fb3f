"""The paper's score, shared by every kind that reconstructs slices (the autoencoders, AnoGAN,
and the intensity-threshold baseline whose "reconstruction" is zero): residual per slice,
median filter over the stack, back on the volume grid, times the eroded brain mask.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from brainuad.config import DetectConfig, RunConfig
from brainuad.data.slices import SubjectSlices, cut_slices, slice_region, to_volume
from brainuad.errors import BrainUADError
from brainuad.io.images import Volume
from brainuad.models.common.blocks import fuse_batchnorm
from brainuad.models.common.normative_maps import FILE, Normative
from brainuad.preprocessing.morphology import dilate
from brainuad.runtime.clock import Stopwatch
from brainuad.scoring.postprocess import (
    Scored,
    hyper_floor,
    masked,
    median_filter,
    residual_map,
    shape_residual,
)


def reconstruct(model: nn.Module, images: np.ndarray, batch_size: int,
                precision: str = "32") -> np.ndarray:
    """(N, S, S) slices in [0, 1] -> reconstructions (N, S, S), on the model's device."""
    device = next(model.parameters(), torch.empty(0)).device
    # oneDNN's fast layout for convolutions; converted outside inference mode so the weights stay
    # ordinary tensors (AnoGAN's latent search differentiates through them)
    model.eval().to(memory_format=torch.channels_last)
    out = np.empty_like(images)
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                enabled=precision == "bf16"):
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
            batch = batch.contiguous(memory_format=torch.channels_last)
            reconstruction = model.reconstruct(batch)[:, 0].float().cpu()
            out[start:start + batch_size] = reconstruction.numpy()
    return out


class ResidualScorer:
    """Scores a scan by what its network cannot reconstruct (`score: residual`), or by that
    residual where the voxel is also unusually bright for its place (`score: product`: times
    the positive z-score against the normative maps)."""

    def __init__(self, cfg: RunConfig, network: nn.Module | None, maps: Normative | None,
                 device: torch.device) -> None:
        self.cfg, self.maps, self.device = cfg, maps, device
        self.network = fuse_batchnorm(network).to(device)  # eval-mode BN folded into convs
        self.has_network = True

    def reconstruct(self, data: SubjectSlices, detect: DetectConfig,
                    precision: str) -> np.ndarray:
        return reconstruct(self.network, data.images, detect.batch_size, precision)

    def score(self, image: Volume, mask: Volume, detect: DetectConfig, precision: str,
              clock: Stopwatch) -> Scored:
        start = time.perf_counter()
        data = cut_slices(image, mask, self.cfg.model.image_size, detect.slices)
        floor = hyper_floor(image.data, mask.data, detect)
        reconstruction = self.reconstruct(data, detect, precision)
        clock.lap("reconstruct")
        brain = mask.data > 0
        region = slice_region(data.geometry)
        if detect.score == "product":
            value = self._product(data, reconstruction, image, brain, region, detect, floor)
            clock.lap("normative + median")
        else:
            residual = residual_map(data.images, reconstruction, data.masks, detect.residual,
                                    floor)
            # Only brain voxels are ever scored; one voxel more covers the interpolation.
            near_brain = dilate(data.masks > 0)
            value = to_volume(median_filter(residual, detect.median_size, where=near_brain),
                              data.geometry)
            clock.lap("residual + median")
        score, scored = masked(value, brain, region, image.spacing, detect)
        clock.lap("to volume + eroded mask")
        return Scored(score, brain & region, scored, time.perf_counter() - start,
                      len(data.geometry.indices))

    def _product(self, data: SubjectSlices, reconstruction: np.ndarray, image: Volume,
                 brain: np.ndarray, region: np.ndarray, detect: DetectConfig,
                 floor: float | None) -> np.ndarray:
        """The residual (shaped by `detect.residual`) times the positive z-score, median
        filtered on the volume grid."""
        if self.maps is None:
            raise BrainUADError(f"this model has no normative maps ({FILE}); score 'product' "
                                "needs them (`brainuad calibrate --score product`)")
        values = np.clip(image.data, 0, 1) * brain
        z = self.maps.zscore(values, brain, image.affine, detect.normative_floor)
        difference = to_volume((data.images - reconstruction) * data.masks, data.geometry)
        value = shape_residual(difference, values, brain, detect.residual, floor)
        value = value * np.maximum(z, 0) * region
        return median_filter(value, detect.median_size,
                             where=dilate(brain) & region)
