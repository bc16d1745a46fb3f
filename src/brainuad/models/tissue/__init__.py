"""Tissue-referenced scoring: a scan's voxels against the scan's own grey matter (its level and
spread where the atlas puts grey matter). No training and no other scan's intensities, so it
holds on scanners and protocols it never saw; its settings and operating point are chosen on
labelled validation scans."""

from __future__ import annotations

from brainuad.models.kind import Kind

KIND = Kind(
    name="tissue",
    summary="each voxel against the scan's own grey matter (level and spread); no training",
    presets={"tissue": {}},
    defaults={"tissue": {"detect": {"score": "tissue", "residual": "positive",
                                    "median_size": 3}}},
    scores=("tissue",),
    fields={"model": ("name",), "train": ("modality", "subjects"),
            "detect": ("median_size", "score", "residual", "hyper_quantile", "erosion_mm",
                       "percentile", "min_component", "seed_margin", "reference_mm",
                       "reference_passes", "normal_sites", "slices")},
    scorer="brainuad.models.tissue.scorer:TissueScorer",
)
