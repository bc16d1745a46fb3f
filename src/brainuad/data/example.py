"""Examples the package makes itself, as a scanner would hand them over, with their known
lesions: the FLAIR `brainuad segment --example` segments and scores, and two visits of one
person with new lesions (`example_pair`, what `compare` is tested on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainuad.data.lesions import LOADS, insert_lesions
from brainuad.data.synth import SynthConfig, make_subject
from brainuad.io.images import Volume, load_binary, save_volume
from brainuad.io.sitk import from_sitk, to_sitk
from brainuad.preprocessing.atlas import atlas
from brainuad.preprocessing.intensity import scale_to_unit
from brainuad.preprocessing.transforms import affine_transform, resample


def scanner_grid(resolution: int, angles_deg: tuple[float, float] = (12, 5),
                 shift_mm: tuple[float, float, float] = (0, -18, 18)) -> np.ndarray:
    """The affine of a scanner's grid: tilted by `angles_deg` (about x, then z), anisotropic
    (0.9 x 0.9 x 3 mm; doubled at 2 mm), 230 x 256 x 56 voxels (halved at 2 mm)."""
    angle_x, angle_z = np.deg2rad(angles_deg)
    rotation = (np.array([[1, 0, 0], [0, np.cos(angle_x), -np.sin(angle_x)],
                          [0, np.sin(angle_x), np.cos(angle_x)]])
                @ np.array([[np.cos(angle_z), -np.sin(angle_z), 0],
                            [np.sin(angle_z), np.cos(angle_z), 0], [0, 0, 1]]))
    spacing = np.array([0.9, 0.9, 3.0]) * resolution
    raw_affine = np.eye(4)
    raw_affine[:3, :3] = rotation * spacing
    raw_affine[:3, 3] = -raw_affine[:3, :3] @ (_shape(resolution) / 2) + shift_mm
    return raw_affine


def _shape(resolution: int) -> np.ndarray:
    return np.array([230, 256, 56]) // resolution


def on_scanner_grid(data: np.ndarray, resolution: int, raw_affine: np.ndarray,
                    nearest: bool = False) -> np.ndarray:
    """An atlas-grid volume resampled onto a scanner grid (`scanner_grid`)."""
    grid = to_sitk(np.zeros(_shape(resolution), np.float32), raw_affine)
    image = to_sitk(np.asarray(data, np.float32), atlas(resolution)["affine"])
    return from_sitk(resample(image, grid, affine_transform(np.eye(4)), nearest))[0]


def example_scan(folder: Path, seed: int = 7, resolution: int = 1, lesioned: bool = True,
                 contrast: str = "flair") -> tuple[Path, Path]:
    """A raw-like example FLAIR the package makes itself: a synthetic lesioned FLAIR (heavy
    lesion load; 1 mm, or 2 mm for quick tests; a healthy one without `lesioned`) on a tilted,
    anisotropic scanner grid (`scanner_grid`), in scanner-like units; and its lesions there."""
    cfg = SynthConfig(resolution=resolution, seed=seed, contrast=contrast, **LOADS[1])
    volumes = make_subject(cfg, 0, lesioned=lesioned)
    raw_affine = scanner_grid(resolution)
    image = on_scanner_grid(volumes["image"], resolution, raw_affine)
    label = on_scanner_grid(volumes["label"], resolution, raw_affine, nearest=True)
    name = "example_flair" if lesioned else "healthy_flair"
    scan = save_volume(folder / f"{name}.nii.gz", np.round(image).clip(0, 65535),
                       raw_affine, np.uint16)
    truth = save_volume(folder / f"{name.removesuffix('_flair')}_lesions.nii.gz", label > 0.5,
                        raw_affine, np.uint8)
    return scan, truth


def example_pair(folder: Path, seed: int = 7, resolution: int = 1) -> dict[str, Path]:
    """Two visits of one synthetic person, as two scanners' sessions hand them over: the
    baseline with some lesions, the follow-up with those and new ones, the head placed
    differently (another tilt and shift) and new noise. Returns the `baseline` and `followup`
    scans, and the `new` lesions and the `baseline_lesions` on the follow-up's grid."""
    cfg = SynthConfig(resolution=resolution, seed=seed)
    healthy = make_subject(cfg, 0, lesioned=False)
    mask, affine = healthy["mask"], atlas(resolution)["affine"]
    scaled = scale_to_unit(healthy["image"], mask)
    before, old = insert_lesions(scaled, mask, affine, seed)
    after, added = insert_lesions(before, mask, affine, seed + 1)
    rng = np.random.default_rng(seed)
    grids = {"baseline": scanner_grid(resolution), "followup": scanner_grid(
        resolution, (7, -4), (3, -15, 22))}
    paths = {}
    for name, image in (("baseline", before), ("followup", after)):
        data = on_scanner_grid(image * 1000, resolution, grids[name])
        data = np.abs(data + rng.normal(0, 15, data.shape) * (data > 0))
        paths[name] = save_volume(folder / f"{name}.nii.gz", np.round(data).clip(0, 65535),
                                  grids[name], np.uint16)
    for name, label in (("new", added & ~old), ("baseline_lesions", old)):
        grid = on_scanner_grid(label, resolution, grids["followup"], nearest=True)
        paths[name] = save_volume(folder / f"{name}.nii.gz", grid > 0.5, grids["followup"],
                                  np.uint8)
    return paths


def load_truth(path: Path, like: Volume) -> np.ndarray:
    """The example's known lesions, on the grid of a mask made from it."""
    return load_binary(path, like, "label").data > 0
