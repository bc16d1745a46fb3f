"""AnoGAN (Schlegl et al. 2017): a DCGAN of healthy slices; a slice is reconstructed by
searching the generator's latent code (100 Adam steps), then scored like the autoencoders."""

from __future__ import annotations

from brainuad.models.kind import Kind

KIND = Kind(
    name="anogan",
    summary="a GAN's generator; a slice is reconstructed by a search of its latent code",
    presets={"anogan": {"bottleneck": "dense", "levels": 4, "latent_dim": 64,
                        "variational": False, "adversarial": True}},
    # AnoGAN trains as a DCGAN (150 epochs in the paper, Adam 2e-4 for both networks) and takes
    # its threshold on 5 calibration subjects (its latent search costs 100 passes per slice).
    defaults={"anogan": {"train": {"epochs": 150, "lr": 2e-4, "lr_adversarial": 2e-4},
                         "detect": {"threshold_subjects": 5}}},
    scores=("residual", "product"),
    fields={"model": ("name", "image_size", "levels", "width", "max_width", "bottleneck",
                      "latent_dim", "adversarial", "search_steps", "search_lr",
                      "search_feature_weight"),
            "train": ("modality", "slices", "subjects", "epochs", "batch_size", "lr",
                      "lr_adversarial", "lr_schedule", "seed", "precision", "accelerator",
                      "devices", "num_nodes", "strategy", "deterministic"),
            "detect": None},
    scorer="brainuad.models.common.residual:ResidualScorer",
    network="brainuad.models.anogan.network:AnoGAN",
    lightning="brainuad.models.anogan.lightning_model:AnoGANModule",
)
