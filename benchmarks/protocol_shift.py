"""Healthy tissue flagged under simulated protocol shifts (issue 22): each shift of
`brainuad.data.shifts` applied to raw scans, segmented with a model; flagged ml per scan.

    python benchmarks/protocol_shift.py [--model flair-ms] [--work /tmp/bench-shift] [--fresh]

Scans: 2 healthy synthetic 1 mm FLAIRs of the default contrast and 2 of the 3D-FLAIR-like one
(`brainuad synth --contrast flair3d`; a seed no model was made with), which have no lesion, so
everything flagged is a false positive; and 2 raw 2D FLAIRs of the training protocol (MS
patients: their unshifted figure is the reference, the shift's excess is what it adds). Prints
a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from brainuad.commands.segment import SegmentOptions, segment_scans
from brainuad.data.shifts import SHIFTS, shifted
from brainuad.data.synth import SynthConfig, make_subject
from brainuad.errors import BrainUADError
from brainuad.io.images import load_scan, save_volume
from brainuad.preprocessing.atlas import atlas

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mslub_longitudinal_raw"
REAL = ("patient09_study2", "patient20_study2")


def healthy(work: Path) -> list[Path]:
    """Healthy synthetic 1 mm FLAIRs, default and 3D-like contrast, as NIfTI files."""
    paths = []
    for name, contrast in (("synth2d", "flair"), ("synth3d", "flair3d")):
        cfg = SynthConfig(resolution=1, seed=41, contrast=contrast)
        for index in range(2):
            volumes = make_subject(cfg, index, lesioned=False)
            paths.append(save_volume(work / "scans" / f"{name}_{index}.nii.gz",
                                     volumes["image"], atlas(1)["affine"]))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-ms")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-shift"))
    parser.add_argument("--shifts", default=",".join(SHIFTS))
    parser.add_argument("--fresh", action="store_true",
                        help="start over (by default, scans segmented before are reused)")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    scans = healthy(args.work)
    if DATA.is_dir():
        scans += [DATA / name / "FLAIR.nii.gz" for name in REAL]
    else:
        print(f"{DATA}: absent; synthetic scans only", file=sys.stderr)
    rows = []
    for shift in args.shifts.split(","):
        for scan in scans:
            name = scan.name.removesuffix(".nii.gz") if "synth" in scan.name else \
                scan.parent.name
            path = save_volume(args.work / "shifted" / shift / f"{name}.nii.gz",
                               shifted(load_scan(scan), shift, seed=1).data,
                               load_scan(scan).affine)
            out = args.work / "seg" / shift
            try:
                row = segment_scans([path], out, SegmentOptions(model=args.model))[0]
                rows.append({"shift": shift, "scan": name, "flagged_ml": row["lesion_volume_ml"]})
            except BrainUADError as err:  # refused (e.g. by the registration check): a row too
                rows.append({"shift": shift, "scan": name, "flagged_ml": None,
                             "error": str(err)})
            print(json.dumps(rows[-1]), flush=True)
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
    print(json.dumps({"benchmark": "protocol_shift", "model": args.model, "rows": rows}))


if __name__ == "__main__":
    main()
