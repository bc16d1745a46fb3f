"""Brain masks against reference outlines: the template's (MNI152 mask carried by the
registration) and the scan's own (deepbet), issue 24.

    python benchmarks/brain_mask.py

References: the public MSLUB longitudinal dataset's brain masks of the raw FLAIRs (on its common
space; each raw FLAIR carried there by the dataset's transform, the masks with it) and the IXI
T1 parcellations (label > 0). Prints a table (Dice, litres, deepbet's seconds) and a JSON line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from run_record import run_record  # benchmarks/run_record.py

from brainuad.errors import BrainUADError
from brainuad.io.images import load_scan
from brainuad.io.sitk import to_sitk
from brainuad.preprocessing.atlas import template
from brainuad.preprocessing.brain_mask import agreement, scan_brain
from brainuad.preprocessing.pipeline import PreprocessConfig, register_volumes
from brainuad.preprocessing.registration import RegistrationConfig
from brainuad.preprocessing.transforms import read_transform

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def template_mask(volume, modality: str) -> sitk.Image:
    """The template's brain mask on the scan's grid (a doubtful registration only warned)."""
    cfg = PreprocessConfig(reference=modality, brain_mask="template",
                           registration=RegistrationConfig(qc="warn"))
    registered = register_volumes({modality: volume}, modality, cfg)
    _, brain = template()
    return sitk.Resample(brain, to_sitk(volume.data, volume.affine),
                         registered.transform.GetInverse(), sitk.sitkNearestNeighbor)


def own_mask(volume) -> tuple[sitk.Image, float]:
    start = time.perf_counter()
    mask = scan_brain(volume)
    return to_sitk(mask.astype(np.float32), volume.affine), time.perf_counter() - start


def flair_rows() -> list[dict]:
    rows = []
    for folder in sorted((DATA / "mslub_longitudinal_raw").iterdir()):
        patient, study = folder.name.split("_")
        common = DATA / "mslub_longitudinal_common" / patient
        transform = common / f"{study}_FLAIR_to_common_space.tfm"
        if not transform.exists():
            continue
        reference = sitk.ReadImage(str(common / "brain_mask.nii.gz"))
        truth = sitk.GetArrayFromImage(reference) > 0
        to_common = read_transform(transform)
        volume = load_scan(folder / "FLAIR.nii.gz")
        own, seconds = own_mask(volume)
        masks = {"template": template_mask(volume, "flair"), "deepbet": own}
        row = {"scan": folder.name, "reference_l": truth.sum() * _litres(reference)}
        for name, mask in masks.items():
            carried = sitk.GetArrayFromImage(sitk.Resample(
                sitk.Cast(mask, sitk.sitkFloat32), reference, to_common)) > 0.5
            row[f"dice_{name}"] = agreement(carried, truth)
            row[f"{name}_l"] = carried.sum() * _litres(reference)
        rows.append({**row, "deepbet_s": seconds})
    return rows


def ixi_rows() -> list[dict]:
    rows = []
    for folder in sorted((DATA / "ixi_t1").glob("IXI*")):
        volume = load_scan(folder / "T1.nii.gz")
        truth = np.asarray(nib.load(folder / "labels_dlmuse.nii.gz").dataobj) > 0
        litres = float(np.prod(volume.spacing)) / 1e6
        own, seconds = own_mask(volume)
        row = {"scan": folder.name, "reference_l": truth.sum() * litres}
        try:
            masks = {"template": template_mask(volume, "t1"), "deepbet": own}
        except BrainUADError as err:
            masks = {"deepbet": own}
            row["template_error"] = str(err)
        for name, mask in masks.items():
            array = sitk.GetArrayFromImage(mask).T > 0.5
            row[f"dice_{name}"] = agreement(array, truth)
            row[f"{name}_l"] = array.sum() * litres
        rows.append({**row, "deepbet_s": seconds})
    return rows


def _litres(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1e6


def table(rows: list[dict]) -> str:
    lines = ["| scan | reference l | template: Dice, l | deepbet: Dice, l | deepbet s |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        template_cell = (f"{r['dice_template']:.4f}, {r['template_l']:.3f}"
                         if "dice_template" in r else "refused")
        lines.append(f"| {r['scan']} | {r['reference_l']:.3f} | {template_cell} | "
                     f"{r['dice_deepbet']:.4f}, {r['deepbet_l']:.3f} | {r['deepbet_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    if not DATA.exists():
        raise SystemExit(f"needs {DATA}")
    results = {"flair": flair_rows(), "ixi_t1": ixi_rows()}
    for name, rows in results.items():
        print(f"\n{name}\n{table(rows)}")
    print(json.dumps({"benchmark": "brain_mask", **run_record({}), "brain_mask": results}))


if __name__ == "__main__":
    main()
