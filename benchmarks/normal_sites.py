"""What the normal-variant flag of lesions.csv (issue 43, `preprocessing/normal_sites.py`) says on
real MS scans, and what removing the flagged lesions would cost: `brainuad segment` with the
shipped model on the labelled MSLUB patients (patient07, patient19: 3D FLAIRs of another
scanner) and the raw 2D FLAIRs of the longitudinal set (unlabelled; patient01's left out: its
scans are kept for compare's outside test).

    python benchmarks/normal_sites.py [--work /tmp/bench-sites]

Per labelled patient: lesions flagged at a site and how many of them touch a reference lesion;
Dice, reference lesions detected and ml flagged farther than 2 mm from any reference lesion,
with the flagged lesions kept (what segment reports) and removed (what a removal rule would
give). Per unlabelled scan: lesions and ml at sites. Prints tables and a JSON line. The labels
only measure: nothing here chooses a setting.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from run_record import run_record  # benchmarks/run_record.py
from scipy import ndimage

from brainuad.commands.segment import SegmentOptions, segment_scans
from brainuad.evaluation.metrics import dice
from brainuad.io.images import load_binary, load_image
from brainuad.scoring.postprocess import CONNECTIVITY, numbered_lesions

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELLED = ("patient07", "patient19")


def _segmented(scan: Path, out: Path) -> tuple[np.ndarray, np.ndarray, list[dict], np.ndarray]:
    """The lesions of `scan` as numbered in lesions.csv, their rows, and the voxel size (mm)."""
    segment_scans([scan], out, SegmentOptions(normal_sites="flag"))  # what lies there
    folder = out / "FLAIR"
    mask = load_image(folder / "lesion_mask.nii.gz", allow_blank=True)
    score = load_image(folder / "anomaly_score.nii.gz", allow_blank=True)
    _, numbered = numbered_lesions(mask.data > 0, score.data, mask.affine)
    with open(folder / "lesions.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return mask.data > 0, numbered, rows, mask.spacing


def _figures(found: np.ndarray, truth: np.ndarray, spacing: np.ndarray) -> dict:
    references, count = ndimage.label(truth, structure=CONNECTIVITY)
    hit = np.unique(references[found & (references > 0)])
    near = ndimage.distance_transform_edt(~truth, sampling=spacing) <= 2.0
    voxel_ml = float(np.prod(spacing)) / 1000
    return {"dice": round(dice(found, truth), 4), "detected": int((hit > 0).sum()),
            "reference_lesions": count,
            "outside_ml": round(float((found & ~near).sum() * voxel_ml), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-sites"))
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    labelled, unlabelled = [], []
    for name in LABELLED:
        scan = DATA / "mslub" / name / "FLAIR.nii.gz"
        found, numbered, rows, spacing = _segmented(scan, args.work / name)
        truth = load_binary(DATA / "mslub" / name / "lesion_mask.nii.gz",
                            load_image(scan)).data > 0
        at_sites = [int(r["lesion"]) for r in rows if r["site"]]
        flagged = np.isin(numbered, at_sites)
        touching = [n for n in at_sites if (truth & (numbered == n)).any()]
        labelled.append({"patient": name, "lesions": len(rows), "at_sites": len(at_sites),
                         "at_sites_touching_reference": len(touching),
                         "sites": sorted({r["site"] for r in rows if r["site"]}),
                         "kept": _figures(found, truth, spacing),
                         "removed": _figures(found & ~flagged, truth, spacing)})
    for scan in sorted((DATA / "mslub_longitudinal_raw").glob("*/FLAIR.nii.gz")):
        if scan.parent.name.startswith("patient01"):
            continue
        _, _, rows, _ = _segmented(scan, args.work / scan.parent.name)
        sites = [r for r in rows if r["site"]]
        unlabelled.append({"scan": scan.parent.name, "lesions": len(rows),
                           "at_sites": len(sites),
                           "at_sites_ml": round(sum(float(r["volume_ml"]) for r in sites), 3),
                           "ml": round(sum(float(r["volume_ml"]) for r in rows), 3)})
    print("\n| patient | lesions | at sites (touching a reference lesion) | Dice kept / removed "
          "| detected kept / removed | outside ml kept / removed |\n| --- | --- | --- | --- | "
          "--- | --- |")
    for r in labelled:
        kept, removed = r["kept"], r["removed"]
        print(f"| {r['patient']} | {r['lesions']} | {r['at_sites']} "
              f"({r['at_sites_touching_reference']}) | {kept['dice']:.3f} / "
              f"{removed['dice']:.3f} | {kept['detected']} / {removed['detected']} of "
              f"{kept['reference_lesions']} | {kept['outside_ml']:.2f} / "
              f"{removed['outside_ml']:.2f} |")
    print("\n| scan (unlabelled) | lesions | at sites | ml | at sites ml |\n| --- | --- | --- | "
          "--- | --- |")
    for r in unlabelled:
        print(f"| {r['scan']} | {r['lesions']} | {r['at_sites']} | {r['ml']:.2f} | "
              f"{r['at_sites_ml']:.2f} |")
    print(json.dumps({"benchmark": "normal_sites", **run_record(vars(args)),
                      "labelled": labelled, "unlabelled": unlabelled}))


if __name__ == "__main__":
    main()
