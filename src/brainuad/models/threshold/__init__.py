"""The FLAIR-intensity threshold: the training-free baseline that published work found hard to
beat. Its "reconstruction" is zero, so its residual is the image itself and it goes through
exactly the paper's detection path."""

from __future__ import annotations

from brainuad.models.kind import Kind

_MAPS_FREE = ("median_size", "score", "residual", "hyper_quantile", "erosion_mm", "percentile",
              "min_component", "seed_margin", "normal_sites", "slices")


KIND = Kind(
    name="threshold",
    summary="no training: the brain's own intensities, thresholded",
    presets={"threshold": {"variational": False, "adversarial": False}},
    scores=("residual",),
    fields={"model": ("name", "image_size"), "train": ("modality", "subjects"),
            "detect": _MAPS_FREE},
    scorer="brainuad.models.threshold.scorer:ThresholdScorer",
)
