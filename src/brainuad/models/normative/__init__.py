"""The voxel-wise normative model: per-voxel mean and spread of the training scans' intensities
in atlas space; a scan is scored by its z-score against them. No network."""

from __future__ import annotations

from brainuad.models.kind import Kind

KIND = Kind(
    name="normative",
    summary="per-voxel mean and spread of healthy intensities in atlas space; the anomaly is "
            "the z-score",
    presets={"normative": {}},
    defaults={"normative": {"detect": {"score": "normative", "residual": "positive"}}},
    scores=("normative",),
    fields={"model": ("name",), "train": ("modality", "subjects"),
            "detect": ("median_size", "score", "normative_floor", "residual", "hyper_quantile",
                       "erosion_mm", "percentile", "min_component", "seed_margin",
                       "normal_sites", "slices")},
    scorer="brainuad.models.normative.scorer:NormativeScorer",
)
