"""Training of AnoGAN (wiring only): a DCGAN, generator step then discriminator step, Adam with
beta1 = 0.5; a checkpoint and a grid of samples per epoch, to pick by eye the last epoch whose
samples still look realistic (the paper took 82 of 150; `brainuad use-epoch`)."""

from __future__ import annotations

from pathlib import Path

import torch

from brainuad.models.anogan.network import AnoGAN
from brainuad.models.common import losses
from brainuad.models.common.lightning_base import SeededModule


class AnoGANModule(SeededModule):
    keeps_every_epoch = True
    validates = False  # no encoder: its epoch is picked by its samples
    #: Where the grid of samples goes each epoch (set by `train`).
    samples_dir: Path | None = None

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.model = AnoGAN(self.cfg.model)
        self.discriminator = None
        self.channels_last()

    def configure_optimizers(self):
        t = self.cfg.train
        return self.scheduled([
            torch.optim.Adam(self.model.generator.parameters(), lr=t.lr, betas=(0.5, 0.999)),
            torch.optim.Adam(self.model.discriminator.parameters(), lr=t.lr_adversarial,
                             betas=(0.5, 0.999))])

    def training_step(self, x: torch.Tensor, batch_idx: int) -> None:
        """Generator step (-log D(G(z))), then discriminator step on real vs G(z)."""
        opt_g, opt_d = self.optimizers()
        fake = self.model.sample(torch.randn(len(x), self.cfg.model.latent_dim, device=x.device))
        g_loss = losses.generator_adversarial(self.model.discriminator(fake))
        self.step(opt_g, g_loss)
        d_loss = losses.discriminator(self.model.discriminator(x),
                                      self.model.discriminator(fake.detach()))
        self.step(opt_d, d_loss)
        self.log_dict({"train/gen": g_loss, "train/disc": d_loss}, on_step=True, on_epoch=True,
                      batch_size=len(x))
        self.log("loss", d_loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.samples_dir is not None and self.global_rank == 0:
            self._save_samples()

    @torch.no_grad()
    def _save_samples(self, n: int = 16) -> None:
        from brainuad.reporting.figures import figure_samples

        z = torch.randn(n, self.cfg.model.latent_dim,
                        generator=torch.Generator().manual_seed(self.cfg.train.seed))
        was_training = self.model.training
        self.model.eval()
        images = self.model.sample(z.to(self.device))[:, 0].float().cpu().numpy()
        self.model.train(was_training)
        figure_samples(images, self.samples_dir / f"epoch-{self.current_epoch:03d}.png",
                       f"AnoGAN samples, epoch {self.current_epoch}")
