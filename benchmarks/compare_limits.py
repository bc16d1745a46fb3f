"""What limits `brainuad compare`'s detection of the real pairs' reference changes (issue 23):
the tables of docs/results/compare.md, "What limits detection".

    python benchmarks/compare_limits.py [--work /tmp/bench-compare-limits]

(a) the reference changes on the dataset's own alignment (both studies carried to its common
    grid, each divided by its brain median): size, and the mean difference inside each in
    spreads (MAD) of the difference in the brain away from them;
(c) the ceiling of compare's own change score: every voxel beyond 5, 4, 3 spreads, no other
    rule, scored as benchmarks/compare_pairs.py scores it;
(l) `ChangeConfig.lesion` swept, all else as committed: the pairs, and flagged ml (1 mm atlas
    grid) on the 11 scan-rescan pairs of compare_pairs.py, where everything is false.
compare's atlas-space inputs (`on_atlas`) are made once per pair and cached under --work.
Reference masks: Lesjak et al. 2016 (CC BY). Prints tables and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from compare_pairs import COMMON, PAIRS, RAW, _on_common, figures  # benchmarks/
from scipy import ndimage

from brainuad.commands.compare import on_atlas
from brainuad.data.shifts import rescanned
from brainuad.io.images import Volume, load_scan, save_volume
from brainuad.io.sitk import to_sitk
from brainuad.preprocessing.atlas import template_affine
from brainuad.preprocessing.pipeline import PreprocessConfig, register_volumes
from brainuad.preprocessing.registration import maps_to_native
from brainuad.scoring.change import ChangeConfig, detect_change
from brainuad.scoring.postprocess import CONNECTIVITY

LESION_LEVELS = (2.0, 1.5, 1.25, 1.0, 0.75, 0.5, 0.0)


def cached_inputs(work: Path) -> dict[str, dict]:
    """compare's atlas-space inputs of the three pairs and the 11 scan-rescan pairs."""
    work.mkdir(parents=True, exist_ok=True)
    cases = [(p, RAW / f"{p}_study1" / "FLAIR.nii.gz", RAW / f"{p}_study2" / "FLAIR.nii.gz",
              None) for p in PAIRS]
    cases += [(f"rescan_{f.name}", f / "FLAIR.nii.gz", f / "FLAIR.nii.gz", i)
              for i, f in enumerate(sorted(RAW.glob("patient*")))]
    cfg, inputs = PreprocessConfig(), {}
    for name, first, second, seed in cases:
        path = work / f"{name}.pkl"
        if not path.exists():
            baseline = load_scan(first)
            followup = (load_scan(second) if seed is None
                        else Volume(rescanned(baseline, seed).data, baseline.affine, second))
            registered = register_volumes({"followup": followup, "baseline": baseline},
                                          "followup", cfg)
            path.write_bytes(pickle.dumps({
                "visits": on_atlas(registered, baseline, followup, cfg),
                "transform": registered.transform.GetParameters(),
                "centre": registered.transform.GetFixedParameters(),
                "affine": followup.affine, "shape": followup.shape}))
        inputs[name] = pickle.loads(path.read_bytes())
        print(f"inputs of {name} ready", flush=True)
    return inputs


def on_common(case: dict, patient: str, mask: np.ndarray) -> np.ndarray:
    """An atlas-grid change mask on the follow-up's grid (as compare writes it), then on the
    dataset's common grid (as compare_pairs.py carries it)."""
    transform = sitk.AffineTransform(3)
    transform.SetParameters(case["transform"])
    transform.SetFixedParameters(case["centre"])
    grid = to_sitk(np.zeros(case["shape"], np.float32), case["affine"])
    native = maps_to_native({"mask": mask}, template_affine(), grid, transform)["mask"]
    with tempfile.TemporaryDirectory() as tmp:
        path = save_volume(Path(tmp) / "mask.nii.gz", native.round(), case["affine"], np.uint8)
        return _on_common(path, patient, 2, True) > 0


def reference(patient: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The reference change mask, the brain, study 2 - study 1 (each divided by its brain
    median) on the common grid, and the voxel volume in ml."""
    image = sitk.ReadImage(str(COMMON / patient / "change_mask.nii.gz"))
    truth = sitk.GetArrayFromImage(image) > 0
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(COMMON / patient /
                                                      "brain_mask.nii.gz"))) > 0
    second, first = (_on_common(RAW / f"{patient}_study{s}" / "FLAIR.nii.gz", patient, s, False)
                     for s in (2, 1))
    difference = second / np.median(second[brain]) - first / np.median(first[brain])
    return truth, brain, difference, float(np.prod(image.GetSpacing())) / 1000


def part_a(truths: dict) -> list[dict]:
    rows = []
    print("\n| pair | changes | median size (ul) | under 50 ul | |mean z| < 1 | < 2 | >= 3 | "
          "noise (MAD) |\n|" + " --- |" * 8)
    for patient, (truth, brain, difference, voxel_ml) in truths.items():
        calm = brain & ~ndimage.binary_dilation(truth, iterations=3)
        values = difference[calm]
        noise = float(1.4826 * np.median(np.abs(values - np.median(values))))
        labels, count = ndimage.label(truth, CONNECTIVITY)
        sizes = np.bincount(labels.ravel())[1:] * voxel_ml * 1000
        z = np.abs(ndimage.mean(difference / noise, labels, range(1, count + 1)))
        row = {"pair": patient, "changes": count, "median_ul": round(float(np.median(sizes)), 1),
               "under_50_ul": int((sizes < 50).sum()), "z_under_1": int((z < 1).sum()),
               "z_under_2": int((z < 2).sum()), "z_3_or_more": int((z >= 3).sum()),
               "noise": round(noise, 3)}
        rows.append(row)
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    return rows


def part_c(inputs: dict, truths: dict) -> list[dict]:
    rows = []
    print("\n| pair | |score| beyond | detection | FDR | Dice | flagged ml |\n|" + " --- |" * 6)
    for patient in PAIRS:
        case = inputs[patient]
        score = detect_change(case["visits"], ChangeConfig()).score
        for level in (5.0, 4.0, 3.0):
            mask = ((np.abs(score) > level) & case["visits"].brain).astype(np.uint8)
            found = figures(on_common(case, patient, mask), truths[patient][0])
            row = {"pair": patient, "beyond": level,
                   **{k: round(found[k], 3) for k in ("detection", "fdr", "dice")},
                   "flagged_ml": round(float(mask.sum()) / 1000, 1)}
            rows.append(row)
            print("| " + " | ".join(str(v) for v in row.values()) + " |", flush=True)
    return rows


def part_l(inputs: dict, truths: dict) -> list[dict]:
    rows = []
    rescans = sorted(name for name in inputs if name.startswith("rescan_"))
    print("\n| lesion | rescan max ml (sum of 11) | detection | FDR | Dice |\n|" + " --- |" * 5)
    for level in LESION_LEVELS:
        cfg = replace(ChangeConfig(), lesion=level)
        flagged = [float((detect_change(inputs[n]["visits"], cfg).mask > 0).sum()) / 1000
                   for n in rescans]
        pairs = {p: figures(on_common(inputs[p], p,
                                      detect_change(inputs[p]["visits"], cfg).mask),
                            truths[p][0]) for p in PAIRS}
        rows.append({"lesion": level, "rescan_max_ml": round(max(flagged), 3),
                     "rescan_sum_ml": round(sum(flagged), 2), "pairs": pairs})
        print(f"| {level} | {max(flagged):.2f} ({sum(flagged):.2f}) | "
              + " | ".join(" / ".join(f"{pairs[p][k]:.3f}" for p in PAIRS)
                           for k in ("detection", "fdr", "dice")) + " |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="acl")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-compare-limits"))
    args = parser.parse_args()
    truths = {p: reference(p) for p in PAIRS}
    result: dict = {"benchmark": "compare_limits"}
    if "a" in args.parts:
        result["reference"] = part_a(truths)
    inputs = cached_inputs(args.work) if set(args.parts) & set("cl") else {}
    if "c" in args.parts:
        result["ceiling"] = part_c(inputs, truths)
    if "l" in args.parts:
        result["lesion_levels"] = part_l(inputs, truths)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
