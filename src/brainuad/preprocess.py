"""Preprocessing: from scans to the atlas-space, skull-stripped, [0, 1] volumes the models see.

Done here for scans already in atlas space (what `synth` writes, and `../shared/data/mslub`):
brain mask (given, or derived from the skull-stripped image), CurvatureFlow denoising (SimpleITK,
as in the paper), then intensities scaled to [0, 1] by robust percentiles inside the brain.

Raw scanner-space scans additionally need N4 bias correction, registration to the MNI152 template
and skull stripping by the template's mask; that is `register_to_atlas`'s place, still to come
(issue 6). Until then a scan whose grid is not atlas-like is processed as given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from brainuad.errors import BrainUADError
from brainuad.io import Volume, load_binary, load_image, save_volume
from brainuad.manifest import Manifest, Subject, read_manifest, write_manifest


@dataclass(frozen=True)
class PreprocessConfig:
    curvature_time_step: float = 0.0625  # the stable limit for 3D curvature flow
    curvature_iterations: int = 5
    lower_percentile: float = 0.5  # maps to 0 inside the brain
    upper_percentile: float = 99.5  # maps to 1 inside the brain


def mask_from_skull_stripped(volume: Volume) -> np.ndarray:
    """Brain mask of an already skull-stripped image: clearly non-zero voxels, holes filled,
    largest connected component (interpolation leaves small non-zero values in the background)."""
    data = volume.data
    threshold = 0.02 * float(np.percentile(data[data > 0], 99)) if (data > 0).any() else 0.0
    foreground = data > threshold
    labels, count = ndimage.label(foreground)
    if count == 0:
        raise BrainUADError(f"{volume.path}: no foreground to derive a brain mask from")
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (1 + int(np.argmax(sizes)))
    filled = np.stack([ndimage.binary_fill_holes(largest[:, :, z])
                       for z in range(largest.shape[2])], axis=2)
    return ndimage.binary_fill_holes(filled).astype(np.uint8)


def denoise(data: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """SimpleITK CurvatureFlow: smooths noise while keeping edges, as the paper did."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(data, dtype=np.float32))
    smoothed = sitk.CurvatureFlow(image, timeStep=cfg.curvature_time_step,
                                  numberOfIterations=cfg.curvature_iterations)
    return sitk.GetArrayFromImage(smoothed)


def scale_to_unit(data: np.ndarray, mask: np.ndarray, lower: float = 0.5,
                  upper: float = 99.5) -> np.ndarray:
    """Map the brain's `lower`..`upper` percentiles to 0..1, clip, and zero outside the mask."""
    inside = data[mask > 0]
    lo, hi = np.percentile(inside, [lower, upper])
    if hi <= lo:
        raise ValueError("the brain's intensities are constant")
    return (np.clip((data - lo) / (hi - lo), 0, 1) * (mask > 0)).astype(np.float32)


def preprocess_subject(subject: Subject, out: Path, cfg: PreprocessConfig,
                       overwrite: bool = False) -> Subject:
    """Write one subject's preprocessed images and brain mask under `out/<subject>/`."""
    folder = out / subject.subject
    targets = {m: folder / f"{m}.nii.gz" for m in subject.images}
    mask_path = folder / "mask.nii.gz"
    done = Subject(subject.subject, subject.split, subject.health, targets, mask_path,
                   subject.label, subject.extra)
    if not overwrite and mask_path.exists() and all(p.exists() for p in targets.values()):
        return done  # every file is written atomically, so existing means complete

    volumes = {m: load_image(p) for m, p in subject.images.items()}
    reference = next(iter(volumes.values()))
    for volume in volumes.values():
        if volume.shape != reference.shape or not np.allclose(volume.affine, reference.affine,
                                                              atol=1e-3):
            raise BrainUADError(
                f"{volume.path}: not on the grid of {reference.path}; modalities of one subject "
                "must be co-registered (raw-scan registration is not available yet)")
    if subject.mask is not None:
        mask = load_binary(subject.mask, reference, "mask").data
        if not mask.any():
            raise BrainUADError(f"{subject.mask}: brain mask is empty")
    else:
        mask = mask_from_skull_stripped(reference)
    if subject.label is not None:
        load_binary(subject.label, reference, "label")  # validate now, not at evaluation
    for modality, volume in volumes.items():
        try:
            scaled = scale_to_unit(denoise(volume.data, cfg), mask, cfg.lower_percentile,
                                   cfg.upper_percentile)
        except ValueError as err:
            raise BrainUADError(f"{volume.path}: {err}") from err
        save_volume(targets[modality], scaled, volume.affine, np.float32)
    save_volume(mask_path, mask, reference.affine, np.uint8)  # last: marks the subject done
    return done


def preprocess_manifest(manifest_path: str | Path, out: str | Path,
                        cfg: PreprocessConfig | None = None, overwrite: bool = False,
                        progress: Callable | None = None) -> Manifest:
    """Preprocess every subject of a manifest; write `out/manifest.csv` pointing at the results."""
    cfg = cfg or PreprocessConfig()
    manifest = read_manifest(manifest_path)
    out = Path(out)
    progress = progress or (lambda iterable, total: iterable)
    done = [preprocess_subject(s, out, cfg, overwrite)
            for s in progress(manifest.subjects, total=len(manifest.subjects))]
    return write_manifest(out / "manifest.csv", done)
