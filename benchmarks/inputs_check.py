"""The checks of what a scan contains (issue 37), measured on every real scan in ../shared/data:
each tissue's level against white matter after registration to MNI152 (the contrast check
that refuses a T1 or T2 given to a FLAIR model, whatever its name), and the correlation of two
visits after compare's rigid registration (the check that refuses two different people).

    python benchmarks/inputs_check.py [--parts cv] [--work /tmp/bench-inputs]

Prints a table per part, the bounds in force and how far each scan or pair is from them, and
one JSON line. `c` registers every scan (about 25, a few seconds each); `v` runs compare's
registration on the same-person pairs and on pairs of different people.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from run_record import run_record  # benchmarks/run_record.py

from brainuad.io.images import Volume, load_scan
from brainuad.preprocessing.atlas import template_affine
from brainuad.preprocessing.pipeline import PreprocessConfig, register_volumes
from brainuad.preprocessing.tissues import CONTRASTS, contrast_problem, contrast_ratios, priors

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: the modality each file name is, in the shared data
NAMES = {"FLAIR": "flair", "T1": "t1", "T1W": "t1", "T2": "t2", "T2W": "t2", "T1POST": "t1post"}


def scans() -> list[tuple[str, str, Path]]:
    """(name, modality, path) of every real scan."""
    found = []
    for path in sorted(DATA.glob("mslub_longitudinal_raw/*/*.nii.gz")) + sorted(
            DATA.glob("mslub/*/*.nii.gz")) + sorted(DATA.glob("ixi_t1/*/T1.nii.gz")):
        kind = path.name.removesuffix(".nii.gz")
        if kind in NAMES:
            found.append((f"{path.parent.parent.name}/{path.parent.name}/{kind}",
                          NAMES[kind], path))
    return found


def part_c() -> list[dict]:
    rows = []
    for name, modality, path in scans():
        volume = load_scan(path)
        registered = register_volumes({modality: volume}, modality,
                                      PreprocessConfig(reference=modality))
        ratios = contrast_ratios(registered.images[modality], registered.mask,
                                 priors(Volume(registered.mask, template_affine())), np.ones(3),
                                 str(path))
        verdicts = {reads: contrast_problem(ratios, reads) is None for reads in CONTRASTS}
        rows.append({"scan": name, "modality": modality, **{k: round(v, 3)
                                                            for k, v in ratios.items()},
                     **{f"passes_{k}": v for k, v in verdicts.items()}})
        print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    print("\n| scan | is | CSF / WM | GM / WM | read as " + " | read as ".join(CONTRASTS) + " |")
    print("|" + " --- |" * (4 + len(CONTRASTS)))
    for r in rows:
        print(f"| {r['scan']} | {r['modality']} | {r['csf']:.3f} | {r['gm']:.3f} | "
              + " | ".join("yes" if r[f"passes_{k}"] else "no" for k in CONTRASTS) + " |")
    wrong = [r["scan"] for r in rows for k in CONTRASTS
             if r[f"passes_{k}"] != (r["modality"].removesuffix("post") == k)]
    print(f"\nbounds: {CONTRASTS}; misread (a T1 after contrast read as a T1 is right): "
          f"{wrong or 'none'}")
    for modality in sorted({r["modality"] for r in rows}):
        mine = [r for r in rows if r["modality"] == modality]
        print(f"{modality}: CSF / WM {min(r['csf'] for r in mine):.3f}-"
              f"{max(r['csf'] for r in mine):.3f}, GM / WM {min(r['gm'] for r in mine):.3f}-"
              f"{max(r['gm'] for r in mine):.3f} ({len(mine)} scans)")
    return rows


#: pairs of raw FLAIRs: the same person's two studies, and different people
SAME = [("patient03_study1", "patient03_study2"), ("patient12_study1", "patient12_study2"),
        ("patient19_study1", "patient19_study2"), ("patient01_study1", "patient01_study2")]
OTHER = [("patient03_study1", "patient12_study2"), ("patient12_study1", "patient19_study2"),
         ("patient19_study1", "patient04_study1"), ("patient09_study2", "patient20_study2"),
         ("patient04_study1", "patient03_study2"), ("patient20_study2", "patient19_study1")]


def part_v() -> list[dict]:
    from brainuad.longitudinal.visits import MIN_SAME_PERSON, on_followup_grid, register_pair

    cfg = PreprocessConfig()
    rows = []
    for same, pairs in ((True, SAME), (False, OTHER)):
        for a, b in pairs:
            baseline, followup = (load_scan(DATA / "mslub_longitudinal_raw" / s / "FLAIR.nii.gz")
                                  for s in (a, b))
            visits = on_followup_grid(register_pair(baseline, followup, cfg), baseline,
                                      followup, cfg)
            rows.append({"baseline": a, "followup": b, "same_person": same,
                         "correlation": round(visits.correlation, 3)})
            print(f"{a} -> {b}: {rows[-1]}", file=sys.stderr, flush=True)
    print("\n| baseline | follow-up | same person | correlation in the brain |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['baseline']} | {r['followup']} | {'yes' if r['same_person'] else 'no'} | "
              f"{r['correlation']:.3f} |")
    chosen = [r for r in rows if "patient01" not in r["baseline"]]  # patient01: a test
    same = min(r["correlation"] for r in chosen if r["same_person"])
    other = max(r["correlation"] for r in chosen if not r["same_person"])
    print(f"\none person's visits >= {same:.3f}, different people <= {other:.3f}: midway "
          f"{(same + other) / 2:.3f}; in force MIN_SAME_PERSON = {MIN_SAME_PERSON}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="cv", help="c: contrast, v: visits (default both)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    out = {"benchmark": "inputs_check", **run_record({"parts": args.parts})}
    if "c" in args.parts:
        out["contrast"] = part_c()
    if "v" in args.parts:
        out["visits"] = part_v()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
