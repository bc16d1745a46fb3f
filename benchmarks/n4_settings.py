"""N4's cost and how far cheaper settings move its result (issue 42): each raw 2D FLAIR of the
MSLUB longitudinal set (patient01's left out: its scans are compare's outside test), and the
labelled 3D FLAIRs of MSLUB patient07 and patient19, bias corrected with the shipped settings
and with coarser fits; the seconds of each (median of `--repeat`) and the mean absolute
difference of the corrected scan from the shipped setting's inside the head, relative to its
mean. A candidate only: whether such a change holds is for the cross-protocol validation
(docs/results/cross_protocol.md) to say, and it changes flair-ms's results (a release).

    python benchmarks/n4_settings.py [--repeat 3]

Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from run_record import run_record  # benchmarks/run_record.py

from brainuad.io.images import load_image
from brainuad.io.sitk import to_sitk
from brainuad.preprocessing.bias import head_mask, n4
from brainuad.preprocessing.registration import RegistrationConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: (shrink, iterations per level): the shipped setting (`RegistrationConfig`'s) first; the
#: table of docs/speed.md of 2026-12-06 had shrink 4 first, before flair-ms version 6 took 6
SETTINGS = [(6, (50, 40, 30)), (6, (50, 40)), (6, (25, 20, 15)), (8, (50, 40, 30)),
            (4, (50, 40, 30))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scans = [p for p in sorted((DATA / "mslub_longitudinal_raw").glob("*/FLAIR.nii.gz"))
             if not p.parent.name.startswith("patient01")]
    scans += sorted((DATA / "mslub").glob("*/FLAIR.nii.gz"))
    if not scans:
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    rows = []
    for scan in scans:
        volume = load_image(scan)
        image = to_sitk(volume.data, volume.affine)
        head = head_mask(image)
        inside = sitk.GetArrayViewFromImage(head) > 0
        shipped = None
        for shrink, iterations in SETTINGS:
            cfg = RegistrationConfig(n4_shrink=shrink, n4_iterations=iterations)
            seconds = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                corrected = sitk.GetArrayFromImage(n4(image, head, cfg))
                seconds.append(time.perf_counter() - start)
            if shipped is None:
                shipped = corrected
            change = float(np.abs(corrected - shipped)[inside].mean() / shipped[inside].mean())
            rows.append({"scan": f"{scan.parent.parent.name}/{scan.parent.name}",
                         "shrink": shrink, "iterations": list(iterations),
                         "seconds": round(statistics.median(seconds), 3),
                         "relative_change": round(change, 4)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| shrink | iterations | seconds mean (range) | relative change mean (max) |\n"
          "| --- | --- | --- | --- |")
    for shrink, iterations in SETTINGS:
        group = [r for r in rows if r["shrink"] == shrink and r["iterations"] == list(iterations)]
        seconds = [r["seconds"] for r in group]
        changes = [r["relative_change"] for r in group]
        print(f"| {shrink} | {iterations} | {np.mean(seconds):.2f} ({min(seconds):.2f}-"
              f"{max(seconds):.2f}) | {np.mean(changes):.4f} ({max(changes):.4f}) |")
    print(json.dumps({"benchmark": "n4_settings", **run_record(vars(args)), "rows": rows}))


if __name__ == "__main__":
    main()
