"""Training of the autoencoder family (wiring only): one Adam step on the reconstruction (plus
KL for the VAEs, plus the adversarial term for sAE-GAN and AnoVAEGAN), then, for those two, a
discriminator step on the same batch, as the paper alternates them."""

from __future__ import annotations

import torch

from brainuad.models.autoencoder.network import AutoEncoder
from brainuad.models.autoencoder.noise import coarse_noise
from brainuad.models.common import losses
from brainuad.models.common.discriminator import Discriminator
from brainuad.models.common.lightning_base import SeededModule


class AutoencoderModule(SeededModule):
    def __init__(self, config: dict) -> None:
        super().__init__(config)
        m = self.cfg.model
        self.model = AutoEncoder(m)
        self.discriminator = Discriminator(m.channels, m.image_size) if m.adversarial else None
        self.channels_last()

    def configure_optimizers(self):
        t = self.cfg.train
        optimisers = [torch.optim.Adam(self.model.parameters(), lr=t.lr)]
        if self.discriminator is not None:
            optimisers.append(torch.optim.Adam(self.discriminator.parameters(),
                                               lr=t.lr_adversarial))
        return self.scheduled(optimisers)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> None:
        t = self.cfg.train
        optimisers = self.optimizers()
        optimisers = optimisers if isinstance(optimisers, list) else [optimisers]
        x_in = coarse_noise(x, t.noise_std, t.noise_resolution) if t.noise == "coarse" else x
        x_hat, mu, logvar, _ = self.model(x_in)
        rec = losses.reconstruction(x, x_hat, t.reconstruction, t.trim)
        loss = t.w_rec * rec
        logs = {f"train/{t.reconstruction}": rec}
        if logvar is not None:
            kl = losses.kl_normal(mu, logvar)
            loss = loss + t.w_kl * kl
            logs["train/kl"] = kl
        if self.discriminator is not None:
            adv = losses.generator_adversarial(self.discriminator(x_hat))
            loss = loss + t.w_adv * adv
            logs["train/adv"] = adv
        self.step(optimisers[0], loss)
        if self.discriminator is not None:
            d_loss = losses.discriminator(self.discriminator(x), self.discriminator(x_hat.detach()))
            self.step(optimisers[1], d_loss)
            logs["train/disc"] = d_loss
        logs["train/loss"] = loss
        self.log_dict(logs, on_step=True, on_epoch=True, prog_bar=False, batch_size=len(x))
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self.log("val/l1", losses.l1(x, self.model.reconstruct(x)), prog_bar=True,
                 on_epoch=True, batch_size=len(x), sync_dist=True)
