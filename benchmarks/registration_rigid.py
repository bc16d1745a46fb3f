"""How far fewer iterations of the atlas registration's rigid stage move its result (issue 42):
each raw 2D FLAIR of the MSLUB longitudinal set (patient01's left out: its scans are compare's
outside test), bias corrected as shipped, registered to the template with the shipped settings
twice (the second run says how much ITK's threaded registration moves by itself) and with the
rigid stage capped at fewer iterations per level (it only starts the affine stage, and ran into
its 100 at both levels on the scans looked at). `RegistrationConfig` has one iteration count for
both stages, so the candidates wrap `registration._method` for the rigid stage only. Reported:
the seconds of `to_template`, the mean displacement of the template's brain (every 50th voxel)
between the candidate's atlas -> scan transform and the shipped one's, and the gate's
brain Dice. A candidate only: it changes flair-ms's results, so whether it holds is for the
cross-protocol validation to say (docs/results/cross_protocol.md).

    python benchmarks/registration_rigid.py [--iterations 50,30]

Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from run_record import run_record  # benchmarks/run_record.py

from brainuad.io.images import load_image
from brainuad.io.sitk import to_sitk
from brainuad.preprocessing import registration
from brainuad.preprocessing.atlas import template
from brainuad.preprocessing.bias import head_mask, n4
from brainuad.preprocessing.transforms import matrix

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mslub_longitudinal_raw"


@contextlib.contextmanager
def rigid_iterations(count: int | None):
    """The rigid stage (the method built for fewer levels than the pyramid has) capped at
    `count` iterations per level; None: as shipped."""
    shipped = registration._method

    def method(cfg, fixed_mask, levels=None, moving_mask=None):
        built = shipped(cfg, fixed_mask, levels, moving_mask)
        if count is not None and levels is not None and levels < len(cfg.shrink):
            built.SetOptimizerAsRegularStepGradientDescent(
                learningRate=cfg.learning_rate, minStep=cfg.min_step, numberOfIterations=count,
                gradientMagnitudeTolerance=1e-8)
            built.SetOptimizerScalesFromPhysicalShift()
        return built

    registration._method = method
    try:
        yield
    finally:
        registration._method = shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", default="50,30", help="rigid-stage caps to try")
    args = parser.parse_args()
    scans = [p for p in sorted(DATA.glob("*/FLAIR.nii.gz"))
             if not p.parent.name.startswith("patient01")]
    if not scans:
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    cfg = registration.RegistrationConfig()
    _, brain = template()
    voxels = np.argwhere(sitk.GetArrayViewFromImage(brain) > 0)[::50][:, ::-1].astype(float)
    points = np.c_[[brain.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels],
                   np.ones(len(voxels))]
    registration.working_template(cfg.working_mm)
    variants = [("shipped", None), ("shipped again", None)] + [
        (f"rigid {n} per level", int(n)) for n in args.iterations.split(",")]
    rows = []
    for scan in scans:
        volume = load_image(scan)
        image = to_sitk(volume.data, volume.affine)
        corrected = n4(image, head_mask(image), cfg)
        shipped = None
        for name, count in variants:
            with rigid_iterations(count):
                start = time.perf_counter()
                transform, quality = registration.to_template(corrected, cfg, str(scan))
                seconds = time.perf_counter() - start
            moved = points @ matrix(transform).T
            shipped = moved if shipped is None else shipped
            rows.append({"scan": scan.parent.name, "variant": name,
                         "seconds": round(seconds, 3),
                         "displacement_mm": round(float(np.linalg.norm(
                             (moved - shipped)[:, :3], axis=1).mean()), 4),
                         "brain_dice": round(quality["brain_dice"], 4)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| variant | seconds mean (range) | displacement from shipped, mm mean (max) | "
          "brain Dice min |\n| --- | --- | --- | --- |")
    for name, _ in variants:
        group = [r for r in rows if r["variant"] == name]
        seconds = [r["seconds"] for r in group]
        moved = [r["displacement_mm"] for r in group]
        print(f"| {name} | {np.mean(seconds):.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | "
              f"{np.mean(moved):.3f} ({max(moved):.3f}) | "
              f"{min(r['brain_dice'] for r in group):.4f} |")
    print(json.dumps({"benchmark": "registration_rigid", **run_record(vars(args)),
                      "rows": rows}))


if __name__ == "__main__":
    main()
