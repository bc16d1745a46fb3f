"""`brainuad compare` on the real longitudinal pairs of ../shared/data (issue 23), scored against
the dataset's reference change masks, and on scan-rescan pairs made from every raw FLAIR.

    python benchmarks/compare_pairs.py [--parts pr] [--work /tmp/bench-compare]

(p) patient03, patient12, patient19: study 1 -> study 2 through `compare`; our change mask (on
    study 2's grid) carried to the dataset's common space by its study 2 transform, then
    lesion-wise detection of the reference changes, false-discovery rate of ours, voxel Dice,
    the direction (the sign of study 2 - study 1 on the dataset's own alignment at the voxels
    both call changed), seconds and peak memory per pair.
(r) every raw FLAIR against itself moved by a random rigid motion (up to 5 degrees, 5 mm), with
    new noise and a new bias field: everything flagged is false.
Reference masks: Lesjak et al. 2016 (CC BY). Prints tables and one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from run_record import run_record  # benchmarks/run_record.py
from scipy import ndimage

from brainuad.commands.compare import compare_scans
from brainuad.data.shifts import rescanned
from brainuad.io.images import load_scan, save_volume
from brainuad.preprocessing.transforms import read_transform
from brainuad.scoring.postprocess import CONNECTIVITY

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RAW, COMMON = DATA / "mslub_longitudinal_raw", DATA / "mslub_longitudinal_common"
PAIRS = ("patient03", "patient12", "patient19")


@functools.cache
def common_space(patient: str, study: int) -> tuple[sitk.Image, sitk.Transform]:
    """The dataset's common grid of a patient and its study's transform to it (read once)."""
    return (sitk.ReadImage(str(COMMON / patient / "change_mask.nii.gz")),
            read_transform(COMMON / patient / f"study{study}_FLAIR_to_common_space.tfm"))


def to_common(image: sitk.Image, patient: str, study: int, nearest: bool) -> np.ndarray:
    """An image of a study (float32) carried to the dataset's common grid by its transform."""
    grid, transform = common_space(patient, study)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(image, grid, transform, interpolator, 0.0))


def _on_common(path: Path, patient: str, study: int, nearest: bool) -> np.ndarray:
    return to_common(sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32), patient, study,
                     nearest)


def figures(got: np.ndarray, truth: np.ndarray) -> dict:
    """Lesion-wise detection of the reference's changes, false-discovery rate of ours (changes
    touching no reference change), voxel Dice, and both counts."""
    ref_labels, ref_count = ndimage.label(truth, CONNECTIVITY)
    our_labels, our_count = ndimage.label(got, CONNECTIVITY)
    return {"detection": len(set(np.unique(ref_labels[got])) - {0}) / max(ref_count, 1),
            "fdr": len(set(range(1, our_count + 1)) - set(np.unique(our_labels[truth])))
            / max(our_count, 1),
            "dice": float(2 * (got & truth).sum() / max(got.sum() + truth.sum(), 1)),
            "changes": our_count, "reference_changes": ref_count}


def part_p(work: Path) -> list[dict]:
    rows = []
    for patient in PAIRS:
        scans = [RAW / f"{patient}_study{s}" / "FLAIR.nii.gz" for s in (1, 2)]
        start = time.perf_counter()
        row = compare_scans(scans, work / patient)[0]
        seconds = time.perf_counter() - start
        ours = _on_common(work / patient / row["pair"] / "change_mask.nii.gz", patient, 2, True)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(COMMON / patient /
                                                          "change_mask.nii.gz"))) > 0
        brain = sitk.GetArrayFromImage(sitk.ReadImage(str(COMMON / patient /
                                                          "brain_mask.nii.gz"))) > 0
        # each study in its own units: divided by its brain median before they are compared
        second, first = (_on_common(scan, patient, study, False)
                         for scan, study in ((scans[1], 2), (scans[0], 1)))
        brighter = second / np.median(second[brain]) > first / np.median(first[brain])
        got = ours > 0
        both = got & truth
        rows.append({
            "pair": patient, "seconds": round(seconds, 1), **figures(got, truth),
            "direction": float(((ours == 1) == brighter)[both].mean()) if both.any() else None,
            "flagged_voxels": int(got.sum()), "reference_voxels": int(truth.sum())})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| pair | detection | false-discovery rate | Dice | direction right | changes "
          "(ours / reference) | s |")
    print("|" + " --- |" * 7)
    for r in rows:
        direction = f"{r['direction']:.2f}" if r["direction"] is not None else "-"
        print(f"| {r['pair']} | {r['detection']:.2f} | {r['fdr']:.2f} | {r['dice']:.3f} | "
              f"{direction} | {r['changes']} / {r['reference_changes']} | {r['seconds']} |")
    return rows


def part_r(work: Path) -> list[dict]:
    rows = []
    for index, folder in enumerate(sorted(RAW.glob("patient*"))):
        scan = load_scan(folder / "FLAIR.nii.gz")
        again = save_volume(work / "rescan" / f"{folder.name}.nii.gz",
                            rescanned(scan, index).data, scan.affine, np.float32)
        row = compare_scans([folder / "FLAIR.nii.gz", again], work / "rescan-out" / folder.name)[0]
        flagged = row["new_ml"] + row["enlarging_ml"] + row["shrinking or resolving_ml"]
        rows.append({"scan": folder.name, "flagged_ml": round(flagged, 3),
                     "seconds": row["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| scan | flagged ml (all false) | s |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['scan']} | {r['flagged_ml']:.3f} | {r['seconds']:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="pr")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-compare"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    result = {"benchmark": "compare_pairs"}
    if "p" in args.parts:
        result["pairs"] = part_p(args.work)
    if "r" in args.parts:
        result["rescan"] = part_r(args.work)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({**run_record(vars(args)), **result}))


if __name__ == "__main__":
    main()
