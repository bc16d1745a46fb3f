"""The names of Table 1 -> model settings, and `build_model`, the one place models are made.

Names describe the paper's 256 px setting: `sae16` has four stride-2 levels (16 x 16 at 256 px,
8 x 8 at 128), `sae8` one more (8 x 8 at 256, 4 x 4 at 128). `anogan` is the DCGAN with a dense
code of 64 whose test-time reconstruction is a latent search (`models/anogan.py`). `threshold` is
the training-free FLAIR-intensity baseline: its "reconstruction" is zero, so its residual is the
image itself and it goes through exactly the same detection path as the learned models.
`denoising` (beyond the paper) is the denoising autoencoder of Kascenas et al. 2022: the shared
levels as a U-Net, trained to remove coarse noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from brainuad.config import ModelConfig
from brainuad.errors import BrainUADError

_SPATIAL = {"bottleneck": "spatial", "levels": 4}
_DENSE = {"bottleneck": "dense", "levels": 4}
MODELS: dict[str, dict[str, Any]] = {
    "dae": {**_DENSE, "variational": False, "adversarial": False},
    "sae8": {**_SPATIAL, "levels": 5, "variational": False, "adversarial": False},
    "sae16": {**_SPATIAL, "variational": False, "adversarial": False},
    "saegan": {**_SPATIAL, "variational": False, "adversarial": True},
    "dvae": {**_DENSE, "variational": True, "adversarial": False},
    "svae": {**_SPATIAL, "variational": True, "adversarial": False},
    "anovaegan": {**_SPATIAL, "variational": True, "adversarial": True},
    "anogan": {**_DENSE, "latent_dim": 64, "variational": False, "adversarial": True},
    "denoising": {**_SPATIAL, "variational": False, "adversarial": False, "skip": True},
    "threshold": {"variational": False, "adversarial": False},
}


#: Settings other than the model's that a name brings (the rest are RunConfig's defaults, the
#: paper's): AnoGAN trains as a DCGAN (150 epochs in the paper, Adam 2e-4 for both networks) and
#: takes its threshold on 5 training subjects (its latent search costs 100 passes per slice).
OTHER_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "anogan": {"train": {"epochs": 150, "lr": 2e-4, "lr_adversarial": 2e-4},
               "detect": {"threshold_subjects": 5}},
    # Kascenas et al. 2022: a U-Net trained with L2 to remove coarse noise (16 x 16, sd 0.2).
    "denoising": {"train": {"noise": "coarse", "reconstruction": "l2"}},
}


def model_defaults(name: str) -> dict[str, Any]:
    if name not in MODELS:
        raise BrainUADError(f"model {name!r}: choose one of {', '.join(MODELS)}")
    return {"name": name, **MODELS[name]}


def name_defaults(name: str) -> dict[str, dict[str, Any]]:
    """Every section's defaults for a model name: `--model NAME` alone is the paper's setting
    (configs/paper/NAME.yaml)."""
    return {"model": model_defaults(name),
            **{k: dict(v) for k, v in OTHER_DEFAULTS.get(name, {}).items()}}


class IntensityThreshold(nn.Module):
    """The FLAIR-threshold baseline as a 'model' whose reconstruction is 0 (residual = image)."""

    def forward(self, x: torch.Tensor):
        return torch.zeros_like(x), None, None, None

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def build_model(cfg: ModelConfig) -> nn.Module:
    from brainuad.models.autoencoders import AutoEncoder

    model_defaults(cfg.name)  # validates the name
    cfg.validate()
    if cfg.name == "threshold":
        return IntensityThreshold()
    if cfg.name == "anogan":
        from brainuad.models.anogan import AnoGAN

        return AnoGAN(cfg)
    return AutoEncoder(cfg)


def build_discriminator(cfg: ModelConfig) -> nn.Module | None:
    from brainuad.models.adversarial import Discriminator

    if cfg.name == "anogan":
        return None  # AnoGAN's discriminator is part of the model: its latent search uses it
    return Discriminator(cfg.channels, cfg.image_size) if cfg.adversarial else None


def run_config(name: str | None = None, config_path: str | None = None,
               overrides: dict[str, dict[str, Any]] | None = None):
    """The RunConfig for a model name, a YAML file, or both (the file's values win over the
    name's defaults; `overrides`, e.g. from command-line flags, win over both)."""
    from brainuad.config import from_dict, load_yaml, merge

    data: dict[str, Any] = load_yaml(config_path) if config_path else {}
    chosen = name or (data.get("model") or {}).get("name") or "anovaegan"
    merged = merge(name_defaults(chosen), data)
    if name:
        merged["model"]["name"] = name
    merged = merge(merged, {k: v for k, v in (overrides or {}).items() if v})
    return from_dict(merged, str(config_path or f"model {chosen}"))
