"""The segment report's size and the seconds to write it (issue 40), on 1 mm 3D FLAIRs of
../shared/data (MSLUB patient07 and patient19, their lesion masks as the findings: 1.3 and 50 ml
in many lesions), and the same with the whole field of view.

    python benchmarks/report.py

The report holds the scan cropped to the brain as 8-bit gzip, the lesions' numbers, a table and
up to 50 panels (drawn in the browser), and the registration panel (a PNG). Prints a table and
one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from run_record import run_record  # benchmarks/run_record.py

from brainuad.io.images import load_image
from brainuad.reporting.html import segment_report
from brainuad.scoring.postprocess import numbered_lesions

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mslub"


def main() -> None:
    if not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    rows = []
    for patient in ("patient07", "patient19"):
        scan = load_image(DATA / patient / "FLAIR.nii.gz")
        lesion = load_image(DATA / patient / "lesion_mask.nii.gz").data > 0
        brain = scan.data > 0
        score = np.where(lesion, 3.0, 0.0).astype(np.float32)
        registered = np.zeros((197, 233, 189), np.float32)  # the template's grid
        for full_fov in (False, True):
            start = time.perf_counter()
            table, numbered = numbered_lesions(lesion, score, scan.affine)
            summary = {"scan": patient, "input": str(scan.path), "brainuad": "-",
                       "lesions": len(table), "lesion_volume_ml": 0.0, "brain_volume_ml": 0.0,
                       "threshold": 0.0, "rule": "-", "model": {"name": "-", "version": "-"},
                       "brain_mask": {"source": "-"},
                       "registration": {"brain_dice": 1, "coverage": 1, "scale": 1,
                                        "rotation": 0, "metric": -1},
                       "warnings": [], "grid": {"shape": list(scan.shape),
                                                "spacing_mm": scan.spacing.tolist()}}
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "report.html"
                segment_report(path, summary, scan, {"lesions": lesion, "brain": brain,
                                                     "score": score}, registered, table,
                               numbered, full_fov)
                seconds = time.perf_counter() - start
                size = path.stat().st_size
            rows.append({"scan": patient, "shape": list(scan.shape), "lesions": len(table),
                         "full_fov": full_fov, "mb": round(size / 1e6, 2),
                         "seconds": round(seconds, 2)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("\n| scan | grid | lesions | view | report MB | seconds to write |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['scan']} | {' x '.join(map(str, r['shape']))} | {r['lesions']} | "
              f"{'whole field' if r['full_fov'] else 'brain'} | {r['mb']} | {r['seconds']} |")
    print(json.dumps({"benchmark": "report", **run_record({}), "rows": rows}))


if __name__ == "__main__":
    main()
