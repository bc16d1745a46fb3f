"""Two scans as acquired in, the changes between them on the follow-up's grid out: what
`brainuad compare` runs for a pair, and `bids` for each pair of sessions.

N4 on both; the follow-up registered to MNI152 (its plausibility checked, as `segment` does: the
atlas's tissues come from it) and the baseline rigidly to the follow-up and resampled onto its
grid, once; each visit's contrast checked to be a FLAIR's and the two checked to be one
person's; scaling, the baseline matched to the follow-up by a gain
(`visits.on_followup_grid`); the change detector, on the follow-up's own grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainuad.io.images import Volume, load_scan
from brainuad.longitudinal.change import Change, ChangeConfig, detect_change
from brainuad.longitudinal.visits import (
    RegisteredPair,
    Visits,
    on_followup_grid,
    register_pair,
    same_person,
)
from brainuad.preprocessing.pipeline import PreprocessConfig
from brainuad.preprocessing.registration_gate import quality_warnings
from brainuad.scoring.postprocess import component_table

#: changes.csv's columns
CHANGE_COLUMNS = ["change", "type", "volume_ml", "baseline_lesion_ml", "followup_lesion_ml",
                  "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "mean_score",
                  "max_abs_score"]


@dataclass
class Found:
    """A pair's changes: the follow-up as read, the registration, both visits on its grid, the
    change there (`score`, `mask`, `labels`) and the warnings."""

    followup: Volume
    registered: RegisteredPair
    visits: Visits
    change: Change
    warnings: list[str]


def find_changes(baseline_path: Path, followup_path: Path, preprocess: PreprocessConfig,
                 cfg: ChangeConfig, lap: Callable[[str], None] = lambda stage: None) -> Found:
    """The changes from `baseline_path` to `followup_path` (`lap(stage)` after each stage)."""
    followup, baseline = load_scan(followup_path), load_scan(baseline_path)
    lap("read")
    registered = register_pair(baseline, followup, preprocess)
    lap("register")
    visits = on_followup_grid(registered, baseline, followup, preprocess)
    warnings = quality_warnings(registered.quality, preprocess.registration)
    warnings += [registered.brain_source.reason] if registered.brain_source.reason else []
    warnings += same_person(visits.correlation, baseline_path, followup_path,
                            preprocess.registration.qc)
    lap("intensities")
    change = detect_change(visits, cfg)
    lap("change")
    return Found(followup, registered, visits, change, warnings)


def change_table(found: Found, cfg: ChangeConfig) -> tuple[list[dict], np.ndarray]:
    """One row per change (`CHANGE_COLUMNS`), numbered from the largest: its volume, the
    lesion volume inside it at each visit (voxels whose lesion z is beyond `cfg.lesion`), its
    centroid in scanner mm, its mean and peak score (spreads of the difference's noise); and
    the changes as those numbers (the report's overlay)."""
    labels, visits = found.change.labels, found.visits
    kinds = {c["label"]: c["type"] for c in found.change.components}
    rows = component_table(labels, found.change.score, found.followup.affine)
    voxel_ml = float(np.prod(visits.spacing)) / 1000
    at = {name: np.bincount(labels[(lesion_z > cfg.lesion) & (labels > 0)],
                            minlength=labels.max() + 1) * voxel_ml
          for name, lesion_z in zip(("baseline", "followup"),
                                    visits.lesion_maps(cfg.reference), strict=True)}
    rows = [r for r in rows if r["label"] in kinds]
    number = np.zeros(labels.max() + 1, np.int64)
    number[[row["label"] for row in rows]] = np.arange(1, len(rows) + 1)
    return [{"change": rank + 1, "type": kinds[row["label"]], "volume_ml": row["volume_ml"],
             "baseline_lesion_ml": round(float(at["baseline"][row["label"]]), 4),
             "followup_lesion_ml": round(float(at["followup"][row["label"]]), 4),
             **{k: row[k] for k in CHANGE_COLUMNS[5:]}}
            for rank, row in enumerate(rows)], number[labels]
