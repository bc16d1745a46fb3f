"""`brainuad compare BASELINE FOLLOWUP`: what changed between two visits of one person: new and
enlarging lesions, shrinking or resolving ones. The best model of "normal" for the follow-up is
the same person's earlier scan, from the same scanner as a rule: no other protocol's statistics.

Per pair (each a FLAIR as it leaves the scanner: NIfTI or a folder with one DICOM series):
N4 on both; the follow-up registered to MNI152 (its plausibility checked, as `segment` does) and
the baseline rigidly to the follow-up, so both are resampled onto the atlas grid through one
interpolation each; CurvatureFlow and brain-percentile scaling on both, the baseline matched
linearly to the follow-up's intensities; each visit's own lesion z-score (against its own grey
matter: the `tissue` model); the change (`scoring/change.py`), written on the follow-up's grid:

    OUT/<pair>/change_mask.nii.gz    1 new or enlarging, 2 shrinking or resolving
    OUT/<pair>/change_score.nii.gz   the difference in spreads of its noise (signed)
    OUT/<pair>/changes.csv           one row per change: type, ml, centroid (scanner mm), score
    OUT/<pair>/summary.json          counts and volumes by type, registration, settings, seconds
    OUT/<pair>/report.html           baseline | follow-up | difference at each change
    OUT/summary.csv                  one row per pair

`summary.json` is written last: a pair whose summary exists is skipped when run again.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainuad import __version__
from brainuad.errors import BrainUADError, Failed, attempt, raise_failures
from brainuad.io.files import remove_partials, write_csv, write_text
from brainuad.io.images import Volume, check_scan, load_scan, save_volume
from brainuad.io.scans import scan_name
from brainuad.io.sitk import to_sitk
from brainuad.models.tissue.scorer import priors, stats_region, tissue_levels
from brainuad.preprocessing.atlas import template_affine
from brainuad.preprocessing.pipeline import (
    PreprocessConfig,
    Registered,
    register_volumes,
    scaled,
)
from brainuad.preprocessing.registration import maps_to_native, quality_warnings
from brainuad.reporting.html import compare_report
from brainuad.runtime.clock import Stopwatch
from brainuad.runtime.progress import Stages, track
from brainuad.scoring.change import ChangeConfig, Visits, detect_change, match

SUMMARY = "summary.json"
STAGES = ("read", "register", "intensities", "change", "to follow-up grid", "write", "report")
CHANGE_COLUMNS = ["change", "type", "volume_ml", "centroid_x_mm", "centroid_y_mm",
                  "centroid_z_mm", "mean_score", "max_abs_score"]
#: Below this correlation of the two visits inside the brain, the pair's alignment is doubtful.
MIN_CORRELATION = 0.8


@dataclass(frozen=True)
class CompareOptions:
    change: ChangeConfig = field(default_factory=ChangeConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    keep_going: bool = False


def read_visits(path: Path) -> list[tuple[str, Path, Path]]:
    """(pair name, baseline, follow-up) for every consecutive pair of visits of each subject of
    a CSV with columns `subject`, `visit` (sorted as numbers where they are, else as text) and
    `flair` (paths relative to the CSV)."""
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as err:
        raise BrainUADError(f"{path}: cannot be read ({err})") from err
    missing = {"subject", "visit", "flair"} - set(rows[0] if rows else {})
    if missing:
        raise BrainUADError(f"{path}: needs the columns subject, visit and flair (missing: "
                            f"{', '.join(sorted(missing))})")
    visits: dict[str, list[tuple[str, Path]]] = {}
    for line, row in enumerate(rows, start=2):
        scan = (path.parent / row["flair"].strip()).resolve()
        if not scan.exists():
            raise BrainUADError(f"{path}, line {line}: {row['flair']!r} does not exist")
        visits.setdefault(row["subject"].strip(), []).append((row["visit"].strip(), scan))

    def order(visit: str) -> tuple:
        return (0, float(visit), "") if visit.replace(".", "", 1).isdigit() else (1, 0.0, visit)

    pairs = []
    for subject, scans in visits.items():
        scans.sort(key=lambda item: order(item[0]))
        pairs += [(f"{subject}_{a}-{b}", pa, pb)
                  for (a, pa), (b, pb) in zip(scans, scans[1:], strict=False)]
    if not pairs:
        raise BrainUADError(f"{path}: no subject has two visits")
    return pairs


def compare_scans(sources: list[str | Path], out: str | Path,
                  options: CompareOptions | None = None) -> list[dict]:
    """Compare BASELINE FOLLOWUP (two scans) or every consecutive pair of a visits CSV into
    `out/<pair>/`, and write `out/summary.csv`. Every scan's header is checked first."""
    options = options or CompareOptions()
    out = Path(out)
    sources = [Path(s) for s in sources]
    if len(sources) == 1 and sources[0].suffix == ".csv":
        pairs = read_visits(sources[0])
    elif len(sources) == 2:
        pairs = [(f"{scan_name(sources[0])}-{scan_name(sources[1])}", *sources)]
    else:
        raise BrainUADError("give BASELINE and FOLLOWUP, or one CSV of visits")
    for _, baseline, followup in pairs:  # before any work
        for scan in (baseline, followup):
            check_scan(scan)
    results = [attempt(options.keep_going, compare_pair, baseline, followup, out / name,
                       options)
               for name, baseline, followup in track(pairs, "compare", unit="pair")]
    rows = [{"pair": name, "error": r.reason} if isinstance(r, Failed) else _row(r)
            for (name, _, _), r in zip(pairs, results, strict=True)]
    write_csv(out / "summary.csv", rows)
    raise_failures([name for name, _, _ in pairs], results, "compare")
    return rows


def _row(summary: dict) -> dict:
    return {"pair": summary["pair"], "baseline": summary["baseline"],
            "followup": summary["followup"],
            **{f"{kind}_count": v["count"] for kind, v in summary["changes"].items()},
            **{f"{kind}_ml": v["ml"] for kind, v in summary["changes"].items()},
            "warnings": "; ".join(summary["warnings"]), "seconds": summary["seconds"]["total"],
            "error": ""}


def compare_pair(baseline_path: Path, followup_path: Path, folder: Path,
                 options: CompareOptions) -> dict:
    """One pair's outputs in `folder`; its summary (read back if it was done before)."""
    if (folder / SUMMARY).is_file():
        return json.loads((folder / SUMMARY).read_text())
    remove_partials(folder)
    clock, stages, start = Stopwatch(), Stages(folder.name, len(STAGES)), time.perf_counter()

    def lap(name: str) -> None:
        clock.lap(name)
        stages.done(name)

    followup, baseline = load_scan(followup_path), load_scan(baseline_path)
    lap("read")
    registered = register_volumes({"followup": followup, "baseline": baseline}, "followup",
                                  options.preprocess)
    lap("register")
    visits = on_atlas(registered, baseline, followup, options.preprocess)
    lap("intensities")
    change = detect_change(visits, options.change)
    lap("change")
    affine = template_affine()
    grid = to_sitk(followup.data, followup.affine)
    native = maps_to_native({"score": change.score, "mask": change.mask,
                             "labels": change.labels}, affine, grid, registered.transform)
    lap("to follow-up grid")
    table = change_table(native["labels"].round().astype(int), native["score"],
                         change.components, followup.affine)
    save_volume(folder / "change_score.nii.gz", native["score"], followup.affine, np.float32)
    save_volume(folder / "change_mask.nii.gz", native["mask"].round(), followup.affine,
                np.uint8)
    write_csv(folder / "changes.csv", table, CHANGE_COLUMNS)
    lap("write")
    warnings = quality_warnings(registered.quality, options.preprocess.registration)
    if visits.correlation < MIN_CORRELATION:
        warnings.append(f"the two visits correlate {visits.correlation:.2f} inside the brain after "
                        f"registration (below {MIN_CORRELATION}): check their alignment")
    summary = {
        "pair": folder.name, "baseline": str(baseline_path), "followup": str(followup_path),
        "brainuad": __version__,
        "changes": {kind: {"count": sum(r["type"] == kind for r in table),
                           "ml": round(sum(r["volume_ml"] for r in table if r["type"] == kind),
                                       4)}
                    for kind in ("new", "enlarging", "shrinking or resolving")},
        "registration": {**registered.quality, "visit_correlation": visits.correlation},
        "noise": change.noise,
        "settings": {**options.change.__dict__,
                     "rule": "after differential bias correction, a change reaches `threshold` "
                             "spreads of the difference's noise (normal-appearing white matter), "
                             "is `lesion` spreads above its visit's own grey matter, lies within "
                             "`white_mm` of the atlas's white matter deeper than `edge_mm` in "
                             "the brain and holds `min_seed` voxels "
                             "that changed lesion status and beat the other visit's brightest "
                             "voxel within `tolerance`; settings chosen on scan-rescan and "
                             "validation pairs (min_voxels leave one pair out; "
                             "docs/results/compare.md)"},
        "warnings": warnings,
        "grid": {"shape": list(followup.shape), "spacing_mm": followup.spacing.round(4).tolist()},
    }
    compare_report(folder / "report.html", summary, table, registered.images, change, affine)
    lap("report")
    summary["seconds"] = clock.seconds(start)
    write_text(folder / SUMMARY, json.dumps(summary, indent=2) + "\n")  # last: done
    stages.close()
    return summary


def on_atlas(registered: Registered, baseline: Volume, followup: Volume,
             cfg: PreprocessConfig) -> Visits:
    """Both registered visits (`baseline`, `followup`: the scans as read) scaled, the baseline
    matched to the follow-up, and each visit's lesion z-score against its own grey matter."""
    brain = registered.mask > 0
    bright = replace(cfg, keep_bright=True)  # the tissue levels need the tail
    f, b = (scaled(registered.images[k], registered.mask, bright, scan.path)
            for k, scan in (("followup", followup), ("baseline", baseline)))
    inner = stats_region(brain, np.ones(3))
    b = match(b, f, inner)
    tissue = priors(Volume(f, template_affine()))
    lesion = {}
    for name, values in (("followup", f), ("baseline", b)):
        levels = tissue_levels(values, inner, tissue, str(followup.path))
        lesion[name] = (values - levels["gm"]) / levels["gm_spread"]
    correlation = float(np.corrcoef(f[inner], b[inner])[0, 1])
    slice_mm = float(max(followup.spacing.max(), baseline.spacing.max()))
    return Visits(b, f, lesion["baseline"], lesion["followup"], brain, tissue["wm"],
                  correlation, slice_mm)


def change_table(labels: np.ndarray, score: np.ndarray, components: list[dict],
                 affine: np.ndarray) -> list[dict]:
    """One row per change component present on the follow-up's grid, largest first."""
    kinds = {c["label"]: c["type"] for c in components}
    index = [i for i in kinds if (labels == i).any()]
    if not index:
        return []
    sizes = ndimage.sum_labels(np.ones(labels.shape), labels, index)
    centres = np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, index))
    world = (affine[:3, :3] @ centres.T).T + affine[:3, 3]
    means = ndimage.mean(score, labels, index)
    extremes = ndimage.maximum(np.abs(score), labels, index)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000
    order = np.argsort(-np.asarray(sizes))
    return [{"change": rank + 1, "type": kinds[index[i]],
             "volume_ml": round(float(sizes[i] * voxel_ml), 4),
             "centroid_x_mm": round(float(world[i, 0]), 2),
             "centroid_y_mm": round(float(world[i, 1]), 2),
             "centroid_z_mm": round(float(world[i, 2]), 2),
             "mean_score": round(float(means[i]), 3),
             "max_abs_score": round(float(extremes[i]), 3)}
            for rank, i in enumerate(order)]

