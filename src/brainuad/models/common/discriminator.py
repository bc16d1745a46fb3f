"""The discriminator of sAE-GAN and AnoVAEGAN: real slice vs reconstruction.

A DCGAN-style stack of the same 5x5 stride-2 levels as the encoder, then one linear logit. It
outputs logits; the losses apply the sigmoid (numerically stable BCE).
"""

from __future__ import annotations

import torch
from torch import nn

from brainuad.models.common.blocks import Encoder


class Discriminator(nn.Module):
    def __init__(self, channels: tuple[int, ...], image_size: int) -> None:
        super().__init__()
        self.features = Encoder(channels)
        side = image_size // 2 ** len(channels)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * side * side, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> logits (B,)."""
        return self.head(self.features(x))[:, 0]
