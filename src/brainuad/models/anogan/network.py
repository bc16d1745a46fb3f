"""AnoGAN (Schlegl et al. 2017): a DCGAN of healthy slices; a slice is "reconstructed" as G(z*)
for the latent code z* that gradient descent finds for it.

The generator is the shared decoder behind a dense code of `latent_dim` (64 in the paper), the
discriminator the shared discriminator, so the comparison with the autoencoders is about the
objective, not the capacity. The latent search minimises, per slice,
`(1 - w) |x - G(z)|_1 + w |f(x) - f(G(z))|_1` (f: the discriminator's last feature map, w = 0.1 as
in Schlegl et al.) for `search_steps` Adam steps, every slice of a batch at once: the loss is a
sum of per-slice terms, so each code gets exactly its own gradient. The search starts from z = 0
(the prior's mode) so that reconstruction is deterministic; only the codes receive gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from brainuad.config import ModelConfig
from brainuad.models.common.blocks import Decoder
from brainuad.models.common.discriminator import Discriminator


class AnoGAN(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width, side = cfg.channels[-1], cfg.bottleneck_side
        self.generator = nn.Sequential(
            nn.Linear(cfg.latent_dim, width * side * side), nn.Unflatten(1, (width, side, side)),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True), Decoder(cfg.channels))
        self.discriminator = Discriminator(cfg.channels, cfg.image_size)
        #: Mean search loss per slice at the first and the last step of the last search.
        self.search_losses: tuple[float, float] | None = None

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) codes -> (B, 1, S, S) slices in [0, 1]."""
        return self.generator(z)

    def _search_loss(self, x: torch.Tensor, real_features: torch.Tensor,
                     z: torch.Tensor) -> torch.Tensor:
        fake = self.generator(z).float()  # the loss in fp32, also under bf16 autocast
        w = self.cfg.search_feature_weight
        residual = (x - fake).abs().flatten(1).mean(1)
        feature = (real_features - self.discriminator.features(fake).float()).abs().flatten(1)
        return (1 - w) * residual + w * feature.mean(1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> G(z*) of the same shape, z* found by `search_steps` Adam steps.

        Called under bf16 autocast (`detect --precision bf16`), the networks run in bf16 while the
        codes, Adam and the loss stay fp32. Autocast's cast cache is off: it keeps the bf16 copy
        of a leaf that requires grad for the whole context, and z is such a leaf updated in place,
        so every step saw z = 0 (the search froze; loss 1.930e-4 -> 1.930e-4).
        """
        device = x.device.type
        bf16 = (torch.is_autocast_enabled(device)
                and torch.get_autocast_dtype(device) == torch.bfloat16)
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(
                device, torch.bfloat16, enabled=bf16, cache_enabled=False):
            x = x.clone()  # a normal tensor even when called under inference_mode
            with torch.no_grad():
                real_features = self.discriminator.features(x).float()
            z = torch.zeros(len(x), self.cfg.latent_dim, device=x.device, requires_grad=True)
            optimiser = torch.optim.Adam([z], lr=self.cfg.search_lr)
            first = None
            for _ in range(self.cfg.search_steps):
                loss = self._search_loss(x, real_features, z)
                first = float(loss.detach().mean()) if first is None else first
                optimiser.zero_grad()
                loss.sum().backward(inputs=[z])  # no weight gradients
                optimiser.step()
            with torch.no_grad():
                last = float(self._search_loss(x, real_features, z).mean())
                out = self.generator(z).float()
        self.search_losses = (first if first is not None else last, last)
        return out
