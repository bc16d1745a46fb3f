"""The bundled ONNX copy of deepbet's networks (onnxruntime, its steps in numpy:
`preprocessing/brain_mask.py`) against deepbet's own TorchScript run, on every raw FLAIR and IXI
T1 of ../shared/data (issue 42): the masks' Dice and the voxels they differ in, and each run's
seconds (the networks already loaded; a second pass, so that neither pays a first-call cost).

    python benchmarks/deepbet_onnx.py

Needs deepbet (`pip install -e ".[test]"`). Prints a table and a JSON line.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from deepbet import BrainExtraction
from run_record import run_record  # benchmarks/run_record.py

from brainuad.io.images import load_scan
from brainuad.preprocessing.brain_mask import NETWORK_SIZE, agreement, scan_brain

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def deepbet_mask(extractor: BrainExtraction, volume) -> np.ndarray:
    """deepbet's own steps at `NETWORK_SIZE`, as brainuad ran them before the ONNX copy."""
    ras = nib.as_closest_canonical(nib.Nifti1Image(volume.data.astype(np.float32),
                                                   volume.affine))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probability = extractor.run_model(ras.get_fdata(dtype=np.float32).copy(),
                                          shape=(NETWORK_SIZE,) * 3)
    mask = extractor.postprocess(probability > 0.5)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                           nib.io_orientation(volume.affine))
    return nib.orientations.apply_orientation(mask, back) > 0


def timed(run, *args) -> tuple[np.ndarray, float]:
    run(*args)
    start = time.perf_counter()
    result = run(*args)
    return result, time.perf_counter() - start


def main() -> None:
    scans = (sorted(DATA.glob("mslub_longitudinal_raw/*/FLAIR.nii.gz"))
             + sorted(DATA.glob("ixi_t1/*/T1.nii.gz")))
    if not scans:
        raise SystemExit(f"no scans under {DATA}")
    extractor = BrainExtraction(no_gpu=True)
    rows = []
    print(f"{'scan':45s} {'Dice':>8s} {'differ':>7s} {'voxels':>8s} {'torch s':>8s} {'onnx s':>7s}")
    for path in scans:
        volume = load_scan(path)
        theirs, torch_s = timed(deepbet_mask, extractor, volume)
        ours, onnx_s = timed(scan_brain, volume)
        row = {"scan": str(path.relative_to(DATA)), "dice": round(agreement(ours, theirs), 6),
               "differ": int((ours ^ theirs).sum()), "voxels": int(theirs.sum()),
               "torch_s": round(torch_s, 2), "onnx_s": round(onnx_s, 2)}
        rows.append(row)
        print(f"{row['scan']:45s} {row['dice']:8.5f} {row['differ']:7d} {row['voxels']:8d} "
              f"{row['torch_s']:8.2f} {row['onnx_s']:7.2f}")
    print(json.dumps({"benchmark": "deepbet_onnx", **run_record({}), "rows": rows}))


if __name__ == "__main__":
    main()
