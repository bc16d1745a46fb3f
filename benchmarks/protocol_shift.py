"""Healthy tissue flagged under simulated protocol shifts (issue 22): each shift of
`brainuad.data.shifts` applied to raw scans, segmented with a model; flagged ml per scan.

    python benchmarks/protocol_shift.py [--model flair-ms] [--work /tmp/bench-shift] [--fresh]
    python benchmarks/protocol_shift.py --variants round3 --shifts none,bias --small
    python benchmarks/protocol_shift.py --caps --work /tmp/bench-caps

`--variants round3`: instead of one model, the three recipes of the cross-protocol validation's
round 3 (docs/results/cross_protocol.md), each at its validation threshold (the mean of the two
folds'): the table that chose flair-ms version 4 (its healthy scans under every shift). `--small`
adds the 2 mm healthy scans of tests/test_shifts.py.

Scans: 2 healthy synthetic 1 mm FLAIRs of the default contrast and 2 of the 3D-FLAIR-like one
(`brainuad synth --contrast flair3d`; a seed no model was made with), which have no lesion, so
everything flagged is a false positive; and 2 raw 2D FLAIRs of the training protocol (MS
patients: their unshifted figure is the reference, the shift's excess is what it adds). `--caps`
(issue 43): instead, the same four healthy scans with the normal bright places of a FLAIR drawn
in (thin caps at the horn tips, a rim around the aqueduct, the fourth ventricle's floor:
`SynthConfig.normal_variants`), and of what is flagged, how much lies at normal-variant sites
(`preprocessing/normal_sites.py`). Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml
from run_record import run_record  # benchmarks/run_record.py

from brainuad.commands.segment import SegmentOptions, segment_scans
from brainuad.data.shifts import SHIFTS, shifted
from brainuad.data.synth import SynthConfig, make_subject
from brainuad.errors import BrainUADError
from brainuad.io.images import load_scan, save_volume
from brainuad.preprocessing.atlas import atlas

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mslub_longitudinal_raw"
REAL = ("patient09_study2", "patient20_study2")


def healthy(work: Path, variants: bool = False) -> list[Path]:
    """Healthy synthetic 1 mm FLAIRs, default and 3D-like contrast, as NIfTI files; with
    `variants`, the normal bright places of a FLAIR drawn in."""
    paths = []
    for name, contrast in (("synth2d", "flair"), ("synth3d", "flair3d")):
        cfg = SynthConfig(resolution=1, seed=41, contrast=contrast, normal_variants=variants)
        for index in range(2):
            volumes = make_subject(cfg, index, lesioned=False)
            stem = f"{name}{'_caps' if variants else ''}_{index}"
            paths.append(save_volume(work / "scans" / f"{stem}.nii.gz", volumes["image"],
                                     atlas(1)["affine"]))
    return paths


#: round 3's recipes (docs/results/cross_protocol.md): detection settings and the mean of the
#: two folds' validation thresholds (scripts/cross_protocol.py --models tissue_passes)
ROUND3 = {"ref10_p1 (version 3)": ({"reference_mm": 10.0, "reference_passes": 1}, 1.696),
          "ref10_p5": ({"reference_mm": 10.0, "reference_passes": 5}, 1.646),
          "ref7_p5 (version 4)": ({"reference_mm": 7.0, "reference_passes": 5}, 1.5855)}


def variant_model(work: Path, name: str, detect: dict, threshold: float) -> Path:
    """flair-ms with other detection settings at `threshold`: a model folder `segment` runs
    (its operating point under the new scoring's key; its quantiles are flair-ms's, unused)."""
    from brainuad.detection.detector import Detector
    from brainuad.models.bundled import resolve

    folder = work / "models" / name.split()[0]
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(resolve("flair-ms"), folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["detect"].update(detect)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    detector = Detector.load(folder, "cpu")
    key = detector.scoring_key(detector.settings())
    info = json.loads((folder / "threshold.json").read_text())
    info["scorings"] = {key: next(iter(info["scorings"].values()))}
    info["operating_points"] = {key: {"threshold": threshold, "dice": None, "subjects": []}}
    (folder / "threshold.json").write_text(json.dumps(info))
    return folder


def small_healthy(work: Path) -> list[Path]:
    """The 2 mm healthy scans of tests/test_shifts.py, as a scanner hands them over."""
    from brainuad.data.example import example_scan

    return [example_scan(work / "small" / contrast, seed=3, resolution=2, lesioned=False,
                         contrast=contrast)[0] for contrast in ("flair", "flair3d")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-ms")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-shift"))
    parser.add_argument("--shifts", default=",".join(SHIFTS))
    parser.add_argument("--fresh", action="store_true",
                        help="start over (by default, scans segmented before are reused)")
    parser.add_argument("--variants", choices=["round3"], help="round 3's recipes, not --model")
    parser.add_argument("--small", action="store_true",
                        help="add the 2 mm healthy scans of tests/test_shifts.py")
    parser.add_argument("--caps", action="store_true",
                        help="healthy scans with the normal bright places drawn in (issue 43)")
    parser.add_argument("--normal-sites", choices=["flag", "remove"],
                        help="segment's --normal-sites (default: the model's; flair-ms 4 "
                             "flagged, 5 removes)")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    scans = healthy(args.work, args.caps) + (small_healthy(args.work) if args.small else [])
    if args.variants or args.caps:  # healthy scans only
        pass
    elif DATA.is_dir():
        scans += [DATA / name / "FLAIR.nii.gz" for name in REAL]
    else:
        print(f"{DATA}: absent; synthetic scans only", file=sys.stderr)
    models = ({name: variant_model(args.work, name, *spec) for name, spec in ROUND3.items()}
              if args.variants else {args.model: args.model})
    rows = []
    for shift in args.shifts.split(","):
        for scan in scans:
            name = (scan.parent.parent.name + "_" + scan.parent.name if "small" in str(scan)
                    else scan.name.removesuffix(".nii.gz") if "synth" in scan.name
                    else scan.parent.name)
            path = save_volume(args.work / "shifted" / shift / f"{name}.nii.gz",
                               shifted(load_scan(scan), shift, seed=1).data,
                               load_scan(scan).affine)
            for model, folder in models.items():
                out = args.work / "seg" / model.split()[0] / shift
                try:
                    row = segment_scans([path], out, SegmentOptions(
                        model=folder, normal_sites=args.normal_sites))[0]
                    sites = json.loads((out / row["scan"] / "summary.json").read_text())[
                        "at_normal_variant_sites"]
                    rows.append({"model": model, "shift": shift, "scan": name,
                                 "flagged_ml": row["lesion_volume_ml"],
                                 "at_sites_ml": sites["volume_ml"],
                                 "removed_ml": (sites.get("removed") or {}).get("volume_ml", 0)})
                except BrainUADError as err:  # refused (by the registration check): a row too
                    rows.append({"model": model, "shift": shift, "scan": name,
                                 "flagged_ml": None, "error": str(err)})
                print(json.dumps(rows[-1]), flush=True)
    if args.variants:
        print("\n| recipe | threshold | " + " | ".join(sorted({r["scan"] for r in rows
                                                              if "patient" not in r["scan"]}))
              + " | max over healthy scans and shifts |")
        healthy_names = sorted({r["scan"] for r in rows if "patient" not in r["scan"]})
        print("|" + " --- |" * (len(healthy_names) + 3))
        for model, (_, threshold) in ROUND3.items():
            cells = []
            for scan in healthy_names:
                values = {r["shift"]: r["flagged_ml"] for r in rows
                          if r["model"] == model and r["scan"] == scan}
                worst = max(values, key=lambda k: values[k] or 0)
                cells.append(f"{values[worst]:.2f} ({worst})")
            peak = max(r["flagged_ml"] or 0 for r in rows
                       if r["model"] == model and "patient" not in r["scan"])
            print(f"| {model} | {threshold} | " + " | ".join(cells) + f" | {peak:.2f} |")
    if args.variants:
        print(json.dumps({"benchmark": "protocol_shift", **run_record(vars(args)),
                          "variants": args.variants, "rows": rows}))
        return
    if args.caps:
        print("\n| shift | " + " | ".join(r["scan"] for r in rows if r["shift"] == rows[0]["shift"])
              + " | max |\n|" + " --- |" * (len(scans) + 2))
        for shift in args.shifts.split(","):
            here = [r for r in rows if r["shift"] == shift]
            print(f"| {shift} | " + " | ".join(
                "refused" if r["flagged_ml"] is None else
                f"{r['flagged_ml']:.2f} ({r['at_sites_ml']:.2f} at sites, {r['removed_ml']:.2f} "
                "removed)" for r in here)
                + f" | {max(r['flagged_ml'] or 0 for r in here):.2f} |")
        print("\nml flagged (of it, ml in lesions kept at normal-variant sites; ml left out of "
              "the mask there)")
    groups = {"synthetic 2D-like": "synth2d", "synthetic 3D-like": "synth3d", "real 2D": "patient"}
    print("\n| shift | " + " | ".join(f"{g}: ml mean (max)" for g in groups) + " |")
    print("|" + " --- |" * (len(groups) + 1))
    for shift in args.shifts.split(","):
        cells = []
        for prefix in groups.values():
            group = [r for r in rows if r["shift"] == shift and r["scan"].startswith(prefix)]
            values = [r["flagged_ml"] for r in group if r["flagged_ml"] is not None]
            refused = len(group) - len(values)
            cells.append((f"{np.mean(values):.2f} ({np.max(values):.2f})" if values else "-")
                         + (f", {refused} refused" if refused else ""))
        print(f"| {shift} | " + " | ".join(cells) + " |")
    print(json.dumps({"benchmark": "protocol_shift", **run_record(vars(args)),
                      "model": args.model, "rows": rows}))


if __name__ == "__main__":
    main()
