"""dAE, sAE, dVAE, sVAE (and the generators of sAE-GAN and AnoVAEGAN): one class, configured.

The bottleneck is the only switch: dense (a vector of `latent_dim`, 512 in the paper) or spatial (a
1x1 convolution to `latent_channels`, 64 in the paper, at the encoder's output resolution), and
variational or not. With `skip` the decoder also sees every encoder level (a U-Net): the
denoising autoencoder of Kascenas et al. 2022, trained to remove coarse noise (`training.py`),
reconstructs sharply and removes what healthy tissue does not explain. `forward` returns
`(x_hat, mu, logvar, z)` and leaves losses to `losses.py`;
`logvar` is None for plain autoencoders. Sampling happens only in training: at test time a VAE
decodes its mean, so reconstruction is deterministic.
"""

from __future__ import annotations

import torch
from torch import nn

from brainuad.config import ModelConfig
from brainuad.models.common.blocks import Decoder, Encoder


class AutoEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.channels)
        self.decoder = Decoder(cfg.channels, skip=cfg.skip)
        width, side = cfg.channels[-1], cfg.bottleneck_side
        factor = 2 if cfg.variational else 1
        if cfg.bottleneck == "spatial":
            self.to_latent = nn.Conv2d(width, factor * cfg.latent_channels, 1)
            self.from_latent = nn.Sequential(nn.Conv2d(cfg.latent_channels, width, 1),
                                             nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        else:
            self.to_latent = nn.Sequential(nn.Flatten(),
                                           nn.Linear(width * side * side, factor * cfg.latent_dim))
            self.from_latent = nn.Sequential(nn.Linear(cfg.latent_dim, width * side * side),
                                             nn.Unflatten(1, (width, side, side)),
                                             nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, list | None]:
        """(B, 1, S, S) -> mu, logvar: (B, 64, s, s) spatial or (B, 512) dense, and the encoder's
        levels for the skips (None without `skip`)."""
        levels = self.encoder.levels(x) if self.cfg.skip else None
        h = self.to_latent(levels[-1] if levels else self.encoder(x))
        if not self.cfg.variational:
            return h, None, levels
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10), levels

    def decode(self, z: torch.Tensor, levels: list | None = None) -> torch.Tensor:
        return self.decoder(self.from_latent(z), levels)

    def forward(self, x: torch.Tensor):
        mu, logvar, levels = self.encode(x)
        z = mu
        if logvar is not None and self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z, levels), mu, logvar, z

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) in [0, 1] -> reconstruction of the same shape, in [0, 1]."""
        mu, _, levels = self.encode(x)
        return self.decode(mu, levels)
