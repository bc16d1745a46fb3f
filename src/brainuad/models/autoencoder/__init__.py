"""The autoencoder family of the paper's Table 1 (dAE, sAE 8x8 and 16x16, sAE-GAN, dVAE, sVAE,
AnoVAEGAN) and the denoising U-Net of Kascenas et al. 2022: one network class configured by its
bottleneck; scored by the residual of its reconstruction."""

from __future__ import annotations

from brainuad.models.kind import Kind

_SPATIAL = {"bottleneck": "spatial", "levels": 4}
_DENSE = {"bottleneck": "dense", "levels": 4}
_NETWORK = ("name", "image_size", "levels", "width", "max_width", "bottleneck",
            "latent_channels", "latent_dim", "variational", "adversarial", "skip")

KIND = Kind(
    name="autoencoder",
    summary="a network reconstructs the slice; the anomaly is what it cannot reconstruct",
    presets={
        "dae": {**_DENSE, "variational": False, "adversarial": False},
        "sae8": {**_SPATIAL, "levels": 5, "variational": False, "adversarial": False},
        "sae16": {**_SPATIAL, "variational": False, "adversarial": False},
        "saegan": {**_SPATIAL, "variational": False, "adversarial": True},
        "dvae": {**_DENSE, "variational": True, "adversarial": False},
        "svae": {**_SPATIAL, "variational": True, "adversarial": False},
        "anovaegan": {**_SPATIAL, "variational": True, "adversarial": True},
        "denoising": {**_SPATIAL, "variational": False, "adversarial": False, "skip": True},
    },
    # Kascenas et al. 2022: a U-Net trained with L2 to remove coarse noise (16 x 16, sd 0.2).
    defaults={"denoising": {"train": {"noise": "coarse", "reconstruction": "l2"}}},
    scores=("residual", "product"),
    fields={"model": _NETWORK, "train": None, "detect": None},
    scorer="brainuad.models.common.residual:ResidualScorer",
    network="brainuad.models.autoencoder.network:AutoEncoder",
    lightning="brainuad.models.autoencoder.lightning_model:AutoencoderModule",
)
