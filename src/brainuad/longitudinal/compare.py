"""Two scans as acquired in, the changes between them on the follow-up's grid out: what
`brainuad compare` runs for a pair, and `bids` for each pair of sessions.

N4 on both; the follow-up registered to MNI152 (its plausibility checked, as `segment` does) and
the baseline rigidly to the follow-up, both resampled onto the atlas grid through one
interpolation each; each visit's contrast checked to be a FLAIR's and the two checked to be one
person's; CurvatureFlow and scaling, the baseline matched to the follow-up
(`visits.on_atlas`); the change detector (`change.detect_change`); its maps carried back to the
follow-up's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainuad.io.images import Volume, load_scan
from brainuad.io.sitk import to_sitk
from brainuad.longitudinal.change import Change, ChangeConfig, detect_change
from brainuad.longitudinal.visits import FLAIRS, Visits, on_atlas, same_person
from brainuad.preprocessing.atlas import template_affine
from brainuad.preprocessing.pipeline import PreprocessConfig, Registered, register_volumes
from brainuad.preprocessing.registration import maps_to_native, quality_warnings
from brainuad.scoring.postprocess import component_table

#: changes.csv's columns
CHANGE_COLUMNS = ["change", "type", "volume_ml", "centroid_x_mm", "centroid_y_mm",
                  "centroid_z_mm", "mean_score", "max_abs_score"]


@dataclass
class Found:
    """A pair's changes: the follow-up as read, the registration, both visits on the atlas
    grid, the change there, its maps on the follow-up's grid (`score`, `mask`, `labels`) and
    the warnings."""

    followup: Volume
    registered: Registered
    visits: Visits
    change: Change
    native: dict[str, np.ndarray]
    warnings: list[str]


def find_changes(baseline_path: Path, followup_path: Path, preprocess: PreprocessConfig,
                 cfg: ChangeConfig, lap: Callable[[str], None] = lambda stage: None) -> Found:
    """The changes from `baseline_path` to `followup_path` (`lap(stage)` after each stage)."""
    followup, baseline = load_scan(followup_path), load_scan(baseline_path)
    lap("read")
    registered = register_volumes({"followup": followup, "baseline": baseline}, "followup",
                                  preprocess, contrasts=FLAIRS)
    lap("register")
    visits = on_atlas(registered, baseline, followup, preprocess)
    warnings = quality_warnings(registered.quality, preprocess.registration)
    warnings += same_person(visits.correlation, baseline_path, followup_path,
                            preprocess.registration.qc)
    lap("intensities")
    change = detect_change(visits, cfg)
    lap("change")
    native = maps_to_native({"score": change.score, "mask": change.mask,
                             "labels": change.labels}, template_affine(),
                            to_sitk(followup.data, followup.affine), registered.transform)
    native["mask"] = native["mask"].round().astype(np.uint8)
    native["labels"] = native["labels"].round().astype(int)
    lap("to follow-up grid")
    return Found(followup, registered, visits, change, native, warnings)


def change_table(found: Found) -> list[dict]:
    """One row per change present on the follow-up's grid (`CHANGE_COLUMNS`), numbered from
    the largest."""
    kinds = {c["label"]: c["type"] for c in found.change.components}
    rows = component_table(found.native["labels"], found.native["score"],
                           found.followup.affine)
    return [{"change": rank + 1, "type": kinds[row["label"]],
             **{k: row[k] for k in CHANGE_COLUMNS[2:]}}
            for rank, row in enumerate(r for r in rows if r["label"] in kinds)]
