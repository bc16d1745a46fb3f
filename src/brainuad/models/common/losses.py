"""Loss terms of the paper, each a small function so they can be tested on their own.

AnoVAEGAN, optimised in alternation:
  generator:     w_rec * |x - x_hat|_1 + w_kl * KL(q(z|x) || N(0, I)) - w_adv * log D(x_hat)
  discriminator: -log D(x) - log(1 - D(x_hat))
Reductions are means (per pixel, per latent element), so the weights do not depend on image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).abs().mean()


def reconstruction(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "l1",
                   trim: float = 0.0) -> torch.Tensor:
    """Mean L1 or L2 error; with `trim`, the largest `trim` fraction of the errors inside the
    brain (x > 0) is left out: on unlabelled patient scans those are where lesions are, and
    learning to reconstruct them would teach the model to reconstruct lesions."""
    error = (x - x_hat).abs() if kind == "l1" else (x - x_hat) ** 2
    if trim <= 0:
        return error.mean()
    brain = x > 0
    if not brain.any():
        return error.mean()
    cut = torch.quantile(error[brain].detach().float(), 1 - trim)
    keep = ~brain | (error.detach() <= cut)
    return (error * keep).sum() / keep.sum()


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), mean over latent elements; 0 iff mu = 0, logvar = 0."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()


def generator_adversarial(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x_hat): small when the discriminator takes reconstructions for real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(x_hat))."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake
