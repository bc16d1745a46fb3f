"""An example FLAIR the package makes itself, as a scanner would hand it over, with its known
lesions: what `brainuad segment --example` segments and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainuad.data.lesions import LOADS
from brainuad.data.synth import SynthConfig, make_subject
from brainuad.io.images import Volume, load_binary, save_volume
from brainuad.io.sitk import from_sitk, to_sitk
from brainuad.preprocessing.atlas import atlas
from brainuad.preprocessing.registration import affine_transform, resample


def example_scan(folder: Path, seed: int = 7, resolution: int = 1) -> tuple[Path, Path]:
    """A raw-like example FLAIR the package makes itself: a synthetic lesioned FLAIR (heavy
    lesion load; 1 mm, or 2 mm for quick tests) resampled onto a tilted (12 and 5 degrees),
    anisotropic (0.9 x 0.9 x 3 mm; doubled at 2 mm) scanner grid, in scanner-like units; and
    its lesions on that grid."""
    cfg = SynthConfig(resolution=resolution, seed=seed, **LOADS[1])
    volumes = make_subject(cfg, 0, lesioned=True)
    affine = atlas(resolution)["affine"]
    angle_x, angle_z = np.deg2rad(12), np.deg2rad(5)
    rotation = (np.array([[1, 0, 0], [0, np.cos(angle_x), -np.sin(angle_x)],
                          [0, np.sin(angle_x), np.cos(angle_x)]])
                @ np.array([[np.cos(angle_z), -np.sin(angle_z), 0],
                            [np.sin(angle_z), np.cos(angle_z), 0], [0, 0, 1]]))
    spacing = np.array([0.9, 0.9, 3.0]) * resolution
    shape = np.array([230, 256, 56]) // resolution
    raw_affine = np.eye(4)
    raw_affine[:3, :3] = rotation * spacing
    raw_affine[:3, 3] = -raw_affine[:3, :3] @ (shape / 2) + [0, -18, 18]
    grid = to_sitk(np.zeros(shape, np.float32), raw_affine)
    identity = affine_transform(np.eye(4))
    image = from_sitk(resample(to_sitk(volumes["image"], affine), grid, identity))[0]
    label = from_sitk(resample(to_sitk(volumes["label"].astype(np.float32), affine), grid,
                               identity, nearest=True))[0]
    scan = save_volume(folder / "example_flair.nii.gz", np.round(image).clip(0, 65535),
                       raw_affine, np.uint16)
    truth = save_volume(folder / "example_lesions.nii.gz", label > 0.5, raw_affine, np.uint8)
    return scan, truth


def load_truth(path: Path, like: Volume) -> np.ndarray:
    """The example's known lesions, on the grid of a mask made from it."""
    return load_binary(path, like, "label").data > 0
