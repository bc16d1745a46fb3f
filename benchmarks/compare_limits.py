"""What limits `brainuad compare`'s detection of the real pairs' reference changes (issue 23):
the tables of docs/results/compare.md, "What limits detection".

    python benchmarks/compare_limits.py [--work /tmp/bench-compare-limits]

(a) the reference changes on the dataset's own alignment (both studies carried to its common
    grid, each divided by its brain median): size, and the mean difference inside each in
    spreads (MAD) of the difference in the brain away from them;
(c) the ceiling of compare's own change score: every voxel beyond 5, 4, 3 spreads, no other
    rule, scored as benchmarks/compare_pairs.py scores it;
(l) `ChangeConfig.lesion` swept, all else as committed: the pairs, and flagged ml (1 mm atlas
    grid) on the 11 scan-rescan pairs of compare_pairs.py, where everything is false;
(o) an oracle that knows each reference change's shape, on the dataset's alignment: the mean
    difference inside it against that shape placed at every other voxel of the brain (its
    median and MAD there): how separable the changes would be if where to look were known;
(s) a smoothed rule without seeds: compare's difference smoothed (Gaussian, 1 mm), each visit
    against the brightest of the other within compare's tolerance, components beyond 2 spreads
    where the visit has a lesion (z > 1) in compare's white matter, kept by their peak; the
    pairs and the rescans' flagged ml, as in (l);
(v) `ChangeConfig.min_voxels` swept, all else as committed, as in (l), and chosen leave one pair
    out: for each pair, the level with the best lesion-wise F1 (detection and 1 - FDR) summed
    over the other two pairs among those whose rescans all stay under 0.5 ml (ties: the
    smaller, the rule with one count fewer, since `min_seed` seeds are that many voxels).
compare's atlas-space inputs (`on_atlas`) are made once per pair and cached under --work.
Reference masks: Lesjak et al. 2016 (CC BY). Prints tables and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from compare_pairs import COMMON, PAIRS, RAW, _on_common, figures  # benchmarks/
from run_record import code_hash, config_hash, run_record  # benchmarks/run_record.py
from scipy import ndimage, signal

from brainuad.data.shifts import rescanned
from brainuad.io.images import Volume, load_scan, save_volume
from brainuad.io.sitk import to_sitk
from brainuad.longitudinal.change import (
    ChangeConfig,
    detect_change,
    looked_at,
    smooth_inside,
    without_differential_bias,
)
from brainuad.longitudinal.visits import Visits, on_atlas
from brainuad.preprocessing.atlas import template_affine
from brainuad.preprocessing.intensity import robust_spread
from brainuad.preprocessing.pipeline import PreprocessConfig, register_volumes
from brainuad.preprocessing.registration import maps_to_native
from brainuad.scoring.postprocess import CONNECTIVITY

LESION_LEVELS = (2.0, 1.5, 1.25, 1.0, 0.75, 0.5, 0.0)
SIZES = (30, 20, 15, 10)
PEAKS = (4.0, 6.0, 8.0, 10.0)


def cached_inputs(work: Path) -> dict[str, dict]:
    """compare's atlas-space inputs of the three pairs and the 11 scan-rescan pairs, cached
    under a key of the package's code and the preprocessing settings (a rerun after a code
    change makes them anew)."""
    work.mkdir(parents=True, exist_ok=True)
    cases = [(p, RAW / f"{p}_study1" / "FLAIR.nii.gz", RAW / f"{p}_study2" / "FLAIR.nii.gz",
              None) for p in PAIRS]
    cases += [(f"rescan_{f.name}", f / "FLAIR.nii.gz", f / "FLAIR.nii.gz", i)
              for i, f in enumerate(sorted(RAW.glob("patient*")))]
    cfg, inputs = PreprocessConfig(), {}
    key = f"{code_hash()}-{config_hash(dataclasses.asdict(cfg))}"
    for name, first, second, seed in cases:
        path = work / f"{name}-{key}.pkl"
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
        noise = robust_spread(values)
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


def sweep(inputs: dict, truths: dict, name: str, levels: tuple,
          rule: Callable[[Visits, float], np.ndarray]) -> list[dict]:
    """Parts (l), (s) and (v): `rule(visits, level)`'s change mask at each level, on the 11
    rescans (flagged ml) and the pairs."""
    rows = []
    rescans = sorted(case for case in inputs if case.startswith("rescan_"))
    print(f"\n| {name} | rescan max ml (sum of 11) | detection | FDR | Dice |\n|" + " --- |" * 5)
    for level in levels:
        flagged = [float((rule(inputs[n]["visits"], level) > 0).sum()) / 1000 for n in rescans]
        pairs = {p: figures(on_common(inputs[p], p, rule(inputs[p]["visits"], level)),
                            truths[p][0]) for p in PAIRS}
        rows.append({name: level, "rescan_max_ml": round(max(flagged), 3),
                     "rescan_sum_ml": round(sum(flagged), 2), "pairs": pairs})
        print(f"| {level} | {max(flagged):.2f} ({sum(flagged):.2f}) | "
              + " | ".join(" / ".join(f"{pairs[p][k]:.3f}" for p in PAIRS)
                           for k in ("detection", "fdr", "dice")) + " |", flush=True)
    return rows


def committed_but(field: str) -> Callable[[Visits, float], np.ndarray]:
    """compare's rule with one field of ChangeConfig set to the level."""
    return lambda visits, level: detect_change(visits, replace(ChangeConfig(),
                                                               **{field: level})).mask


def leave_one_out(rows: list[dict], field: str) -> list[dict]:
    """Part (v)'s choice for each pair from the other two (see the docstring)."""
    def f1(found: dict) -> float:
        precision = 1 - found["fdr"]
        return 2 * found["detection"] * precision / max(found["detection"] + precision, 1e-9)

    allowed = [row for row in rows if row["rescan_max_ml"] < 0.5]
    chosen = []
    print(f"\n| left out | {field} chosen on the other two | detection | FDR | Dice |\n|"
          + " --- |" * 5)
    for patient in PAIRS:
        best = max(allowed, key=lambda row: (sum(f1(row["pairs"][p]) for p in PAIRS
                                                 if p != patient), -row[field]))
        found = best["pairs"][patient]
        chosen.append({"left_out": patient, field: best[field],
                       **{k: round(found[k], 3) for k in ("detection", "fdr", "dice")}})
        print("| " + " | ".join(str(v) for v in chosen[-1].values()) + " |")
    return chosen


def oracle(truth: np.ndarray, brain: np.ndarray, difference: np.ndarray,
           labels: np.ndarray) -> np.ndarray:
    """Per reference change (`labels`): its mean difference against its shape placed at every
    other voxel of the brain, in MADs of those placements."""
    # the common grid is (slice, row, column) at about 3 x 0.72 x 0.72 mm: 6 mm of bias off
    smooth = smooth_inside(difference, brain, (2.0, 8.0, 8.0))
    difference = np.where(brain, difference - smooth, 0).astype(np.float32)
    elsewhere = (ndimage.binary_erosion(brain, iterations=3)
                 & ~ndimage.binary_dilation(truth, iterations=3))
    z = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        shape = (labels[box] == index).astype(np.float32)
        inside = float(difference[box][shape > 0].mean())
        placed = signal.fftconvolve(difference, shape[::-1, ::-1, ::-1] / shape.sum(),
                                    mode="same")[elsewhere]
        centre = float(np.median(placed))
        z.append(abs(inside - centre) / robust_spread(placed, centre))
    return np.asarray(z)


def part_o(truths: dict) -> list[dict]:
    rows = []
    print("\n| pair | changes | oracle z > 3 | > 4 | > 5 | median z |\n|" + " --- |" * 6)
    for patient, (truth, brain, difference, _) in truths.items():
        labels, count = ndimage.label(truth, CONNECTIVITY)
        z = oracle(truth, brain, difference, labels)
        row = {"pair": patient, "changes": count, **{f"beyond_{k}": int((z > k).sum())
                                                     for k in (3, 4, 5)},
               "median_z": round(float(np.median(z)), 2)}
        rows.append(row)
        print("| " + " | ".join(str(v) for v in row.values()) + " |", flush=True)
    return rows


def smoothed_rule(visits: Visits, peak: float, sigma: float = 1.0, low: float = 2.0,
                  lesion: float = 1.0) -> np.ndarray:
    """Part (s): a change mask (1 growth, 2 shrinkage) by the smoothed rule of the docstring."""
    cfg = ChangeConfig()
    brain = visits.brain
    calm, allowed, near = looked_at(visits, cfg)
    followup = without_differential_bias(visits.baseline, visits.followup, brain, cfg)
    f, b = (ndimage.gaussian_filter(np.where(brain, v, 0).astype(np.float32), sigma)
            for v in (followup, visits.baseline))
    noise = robust_spread((f - b)[calm])
    mask = np.zeros(brain.shape, np.uint8)
    for code, z, at in ((1, f - ndimage.maximum_filter(b, footprint=near), visits.lesion_followup),
                        (2, b - ndimage.maximum_filter(f, footprint=near), visits.lesion_baseline)):
        z = z / noise
        labels, count = ndimage.label((z > low) & (at > lesion) & allowed, CONNECTIVITY)
        index = np.arange(1, count + 1)
        keep = ((np.asarray(ndimage.maximum(z, labels, index)) > peak)
                & (np.bincount(labels.ravel(), minlength=count + 1)[1:] >= cfg.min_voxels))
        mask[np.concatenate([[False], keep])[labels]] = code
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="aclosv")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-compare-limits"))
    args = parser.parse_args()
    truths = {p: reference(p) for p in PAIRS}
    result: dict = {"benchmark": "compare_limits"}
    if "a" in args.parts:
        result["reference"] = part_a(truths)
    if "o" in args.parts:
        result["oracle"] = part_o(truths)
    inputs = cached_inputs(args.work) if set(args.parts) & set("clsv") else {}
    if "c" in args.parts:
        result["ceiling"] = part_c(inputs, truths)
    if "l" in args.parts:
        result["lesion_levels"] = sweep(inputs, truths, "lesion", LESION_LEVELS,
                                        committed_but("lesion"))
    if "s" in args.parts:
        result["smoothed"] = sweep(inputs, truths, "peak", PEAKS, smoothed_rule)
    if "v" in args.parts:
        result["min_voxels"] = sweep(inputs, truths, "min_voxels", SIZES,
                                     committed_but("min_voxels"))
        result["min_voxels_chosen"] = leave_one_out(result["min_voxels"], "min_voxels")
    print(json.dumps({**run_record(vars(args)), **result}))


if __name__ == "__main__":
    main()
