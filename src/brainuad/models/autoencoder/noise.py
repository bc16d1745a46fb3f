"""The coarse noise of the denoising autoencoder (Kascenas et al. 2022)."""

from __future__ import annotations

import torch


def coarse_noise(x: torch.Tensor, std: float, resolution: int) -> torch.Tensor:
    """x plus Gaussian noise drawn on a coarse `resolution`^2 grid, upsampled to the slice and
    shifted by a random offset, inside the brain (x > 0) only: blobs of lesion size that the
    denoising autoencoder learns to remove. `(B, 1, S, S)`."""
    noise = torch.randn(len(x), 1, resolution, resolution, device=x.device) * std
    noise = torch.nn.functional.interpolate(noise, size=x.shape[-2:], mode="bilinear",
                                            align_corners=False)
    shifts = [int(torch.randint(n, ())) for n in x.shape[-2:]]
    noise = torch.roll(noise, shifts, dims=(-2, -1))
    return x + noise * (x > 0)
