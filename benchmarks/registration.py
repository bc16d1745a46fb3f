"""Raw-scan preprocessing, measured on the real scans of ../shared/data (issue 6).

(a) known transforms: MSLUB FLAIRs (FSL MNI space, skull stripped) moved by random rigid+affine
    transforms onto a 0.9 x 0.9 x 3 mm grid, preprocessed; error of the recovered atlas -> scan
    transform against the true one (mean displacement over the template brain) and Dice of the
    recovered brain mask against the true one, on the moved scan's grid.
(b) the 11 raw longitudinal FLAIRs: time per scan, brain-mask Dice against an independent crude
    mask (Otsu, opened, largest component, holes filled), and a montage PNG of one mid slice per
    scan over the template's brain outline.
(c) the 10 healthy IXI T1 scans: brain-mask Dice against their reference (label > 0) and time.
(q) the registration's plausibility figures (`register.quality`) on every real scan (the 11 raw
    FLAIRs, the 2 MSLUB test FLAIRs, the 10 IXI T1) and on broken ones made from a raw FLAIR
    and an IXI T1: the field of view cut to the top third of the head, a non-brain phantom,
    and a header whose axes are mislabelled (the head lies rotated by 90 degrees); which pass
    the bounds of `RegistrationConfig`.

    python benchmarks/registration.py [--parts abcq] [--workers 1] [--montage docs/...png]

Prints a table per part and one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from run_record import run_record  # benchmarks/run_record.py
from scipy import ndimage

from brainuad.data.gate_cases import broken_cases, hard_cases, phantom
from brainuad.evaluation.metrics import dice
from brainuad.io.images import load_image
from brainuad.io.manifest import Subject
from brainuad.io.sitk import from_sitk, to_sitk
from brainuad.preprocessing.atlas import template
from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_subject
from brainuad.preprocessing.transforms import affine_transform, matrix, read_transform, to_native

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row)
              + " |")


def _prep(name: str, images: dict[str, Path], out: Path, reference: str = "flair",
          mask: Path | None = None) -> tuple[Subject, float]:
    start = time.perf_counter()
    subject = preprocess_subject(Subject(name, "train", "healthy", images, mask), out,
                                 PreprocessConfig(register="always", reference=reference))
    return subject, time.perf_counter() - start


def _native_mask(subject: Subject) -> tuple[np.ndarray, float]:
    """The subject's atlas-space brain mask on its raw scan's grid (and that grid's voxel ml)."""
    mask = load_image(subject.mask, allow_blank=True)
    native = load_image(subject.native)
    grid = to_sitk(native.data, native.affine)
    out = to_native(mask.data, mask.affine, grid, read_transform(subject.transform), True) > 0.5
    return out, float(np.prod(native.spacing)) / 1000


def _random_affine(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """A random rigid (+-10 deg, +-10 mm) times affine (scale 0.9-1.1, shear +-0.05) about
    `centre`, as a 4 x 4 LPS matrix (scan -> source points)."""
    angles = np.deg2rad(rng.uniform(-10, 10, 3))
    rotation = sitk.Euler3DTransform((0, 0, 0), *angles.tolist())
    linear = np.array(rotation.GetMatrix()).reshape(3, 3)
    linear = linear @ (np.diag(rng.uniform(0.9, 1.1, 3)) + rng.uniform(-0.05, 0.05, (3, 3))
                       * (1 - np.eye(3)))
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre + rng.uniform(-10, 10, 3) - linear @ centre
    return out


def part_a(work: Path, per_patient: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rows, errors, dices, times = [], [], [], []
    fixed, brain = template()
    brain_points = np.array([brain.TransformIndexToPhysicalPoint(tuple(int(i) for i in idx))
                             for idx in np.argwhere(sitk.GetArrayFromImage(brain).T > 0)[::50]])
    for patient in sorted((DATA / "mslub").glob("patient*")):
        flair = patient / "FLAIR.nii.gz"
        source = load_image(flair)
        base, _ = _prep(f"{patient.name}-orig", {"flair": flair}, work)
        t0 = matrix(read_transform(base.transform))  # atlas -> FSL space
        source_img = to_sitk(source.data, source.affine)
        truth_img = to_sitk((source.data > 0).astype(np.float32), source.affine)
        centre = np.array(source_img.TransformContinuousIndexToPhysicalPoint(
            [(n - 1) / 2 for n in source_img.GetSize()]))
        for k in range(per_patient):
            moved_to_source = _random_affine(rng, centre)
            grid = sitk.Image([267, 267, 64], sitk.sitkFloat32)
            grid.SetSpacing([0.9, 0.9, 3.0])
            grid.SetOrigin((centre - np.array([0.9 * 133, 0.9 * 133, 3.0 * 31.5])).tolist())
            transform = affine_transform(moved_to_source)
            moved = sitk.Resample(source_img, grid, transform, sitk.sitkLinear, 0.0)
            mask = sitk.Resample(truth_img, grid, transform, sitk.sitkNearestNeighbor, 0.0)
            data, affine = from_sitk(moved)
            name = f"{patient.name}-moved{k}"
            folder = work / "moved" / name
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "flair.nii.gz"
            import nibabel as nib

            nib.save(nib.Nifti1Image(np.clip(data, 0, None).astype(np.float32), affine), path)
            subject, seconds = _prep(name, {"flair": path}, work)
            recovered = matrix(read_transform(subject.transform))  # atlas -> moved scan
            true = np.linalg.inv(moved_to_source) @ t0
            points = np.c_[brain_points, np.ones(len(brain_points))]
            error = float(np.linalg.norm((points @ recovered.T - points @ true.T)[:, :3],
                                         axis=1).mean())
            ours, _ = _native_mask(subject)
            d = dice(ours, from_sitk(mask)[0] > 0.5)
            rows.append([name, error, d, seconds])
            errors.append(error)
            dices.append(d)
            times.append(seconds)
    _table("(a) known transforms (target: error < 2 mm, Dice > 0.95)",
           ["scan", "mean displacement error (mm)", "brain mask Dice", "seconds"], rows)
    return {"a_error_mm_mean": float(np.mean(errors)), "a_error_mm_max": float(np.max(errors)),
            "a_dice_mean": float(np.mean(dices)), "a_dice_min": float(np.min(dices)),
            "a_seconds_mean": float(np.mean(times))}


def crude_brain_mask(data: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """An independent brain mask for a sanity check only: Otsu foreground, opened by ~5 mm to
    cut the brain from the scalp, largest component, closed again and holes filled."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T, np.float32))
    foreground = sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1)).T > 0
    radius = np.maximum(np.round(5.0 / spacing).astype(int), 1)
    ball = np.ones(2 * radius + 1, bool)
    opened = ndimage.binary_opening(foreground, structure=ball)
    labels, count = ndimage.label(opened)
    if count == 0:
        return opened
    largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    closed = ndimage.binary_dilation(largest, structure=ball) & foreground
    return ndimage.binary_fill_holes(closed)


def part_b(work: Path, montage: Path | None) -> dict:
    rows, dices, times, slices = [], [], [], []
    for scan in sorted((DATA / "mslub_longitudinal_raw").glob("patient*")):
        images = {m: scan / f"{f}.nii.gz" for m, f in (("flair", "FLAIR"), ("t1", "T1W"),
                                                        ("t2", "T2W"))
                  if (scan / f"{f}.nii.gz").exists()}
        subject, seconds = _prep(scan.name, images, work)
        ours, _ = _native_mask(subject)
        raw = load_image(images["flair"])
        d = dice(ours, crude_brain_mask(raw.data, raw.spacing))
        rows.append([scan.name, "+".join(images), d, seconds])
        dices.append(d)
        times.append(seconds)
        slices.append((scan.name, load_image(subject.images["flair"]).data))
    _table("(b) raw longitudinal FLAIRs", ["scan", "modalities", "Dice vs crude mask",
                                           "seconds"], rows)
    if montage is not None:
        _montage(slices, montage)
        print(f"\nmontage: {montage}")
    return {"b_dice_mean": float(np.mean(dices)), "b_dice_min": float(np.min(dices)),
            "b_seconds_mean": float(np.mean(times)), "b_scans": len(rows)}


def _montage(slices: list[tuple[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outline = from_sitk(template()[1])[0] > 0
    cols = 4
    rows = -(-len(slices) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, data) in zip(axes.ravel(), slices, strict=False):
        z = data.shape[2] // 2 + 10
        ax.imshow(np.rot90(data[:, :, z]), cmap="gray", vmin=0, vmax=1)
        ax.contour(np.rot90(outline[:, :, z]), levels=[0.5], colors="yellow", linewidths=0.6)
        ax.set_title(name, fontsize=9)
    fig.suptitle("Raw FLAIRs after brainuad preprocess (N4, affine to MNI152, template mask);"
                 " yellow: template brain outline", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def part_c(work: Path) -> dict:
    rows, dices, times = [], [], []
    for scan in sorted((DATA / "ixi_t1").glob("IXI*")):
        subject, seconds = _prep(scan.name, {"t1": scan / "T1.nii.gz"}, work, reference="t1")
        ours, _ = _native_mask(subject)
        reference = load_image(scan / "labels_dlmuse.nii.gz", allow_blank=True).data > 0
        d = dice(ours, reference)
        rows.append([scan.name, d, seconds])
        dices.append(d)
        times.append(seconds)
    _table("(c) IXI T1 skull stripping (target: mean Dice >= 0.93, none < 0.90)",
           ["scan", "brain mask Dice", "seconds"], rows)
    return {"c_dice_mean": float(np.mean(dices)), "c_dice_min": float(np.min(dices)),
            "c_seconds_mean": float(np.mean(times))}


def _figures(data: np.ndarray, affine: np.ndarray, name: str) -> dict:
    """N4 and the atlas registration of one scan, as preprocessing runs them; its figures."""
    from brainuad.errors import BrainUADError
    from brainuad.preprocessing.bias import head_mask, n4
    from brainuad.preprocessing.registration import RegistrationConfig, to_template

    cfg = RegistrationConfig()
    try:
        image = to_sitk(data, affine)
        image = n4(image, head_mask(image), cfg)
        return to_template(image, cfg, name)[1]
    except (BrainUADError, RuntimeError) as err:
        return {"error": str(err).splitlines()[0][:90]}


def part_q() -> dict:
    """Every real scan, hard cases made from two of them (let through, warned at most) and
    broken ones (refused), through the gate of `registration_gate.judge`."""
    from brainuad.preprocessing.registration import RegistrationConfig
    from brainuad.preprocessing.registration_gate import judge

    cfg = RegistrationConfig()
    real = [p / "FLAIR.nii.gz" for p in sorted((DATA / "mslub_longitudinal_raw").glob("p*"))]
    real += [p / "FLAIR.nii.gz" for p in sorted((DATA / "mslub").glob("patient*"))]
    real += [p / "T1.nii.gz" for p in sorted((DATA / "ixi_t1").glob("IXI*"))]
    rows = []
    for path in real:
        volume = load_image(path)
        rows.append(("real", f"{path.parent.name}/{path.name}",
                     _figures(volume.data, volume.affine, str(path))))
    for source in (real[0], real[11]):  # a raw 2D FLAIR, a 3D FLAIR (MSLUB patient07)
        volume = load_image(source)
        for what, (data, affine) in hard_cases(volume.data, volume.affine).items():
            rows.append(("hard", f"{source.parent.name}: {what}",
                         _figures(data, affine, what)))
    for source in (real[0], real[-1]):
        volume = load_image(source)
        for what, (data, affine) in broken_cases(volume.data, volume.affine).items():
            rows.append(("broken", f"{source.parent.name}: {what}",
                         _figures(data, affine, what)))
    rows.append(("broken", "bottle phantom (not a brain)", _figures(*phantom(), "phantom")))
    table, verdicts = [], {"real": [], "hard": [], "broken": []}
    for kind, name, f in rows:
        if "error" in f:
            verdict = "REFUSED"
        else:
            problems, broken = judge(f, cfg)
            verdict = "REFUSED" if broken else ("warned" if problems else "pass")
        verdicts[kind].append(verdict)
        table.append([kind, name] + ([f.get("error", "")] + [float("nan")] * 5
                                     if "error" in f else
                                     ["", f["brain_dice"], f["coverage"], f["scale"],
                                      f["rotation"], f["metric"]]) + [verdict])
    low, high = cfg.scale_range
    _table(f"(q) registration gate (bounds: brain overlap >= {cfg.min_brain_dice}, coverage >= "
           f"{cfg.min_coverage}, scale {low}-{high}, rotation <= {cfg.max_rotation:g}, metric <= "
           f"{cfg.max_metric}; refused when two are out, or one far out)",
           ["kind", "scan", "error", "brain overlap", "coverage", "scale", "rotation", "metric",
            "verdict"], table)
    return {f"q_{kind}_{verdict}": values.count(verdict) for kind, values in verdicts.items()
            for verdict in ("pass", "warned", "REFUSED")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="abc")
    parser.add_argument("--montage", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep outputs here")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        result = {"benchmark": "registration"}
        if "a" in args.parts:
            result |= part_a(work)
        if "b" in args.parts:
            result |= part_b(work, args.montage)
        if "c" in args.parts:
            result |= part_c(work)
        if "q" in args.parts:
            result |= part_q()
    print("\n" + json.dumps({**run_record(vars(args)), **result}))


if __name__ == "__main__":
    main()
