"""Intensities of a scan on its own: brain mask of a skull-stripped image, CurvatureFlow
denoising (as the paper), and robust scaling of the brain to [0, 1]."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from brainuad.errors import BrainUADError
from brainuad.io.images import Volume
from brainuad.preprocessing.morphology import bounding_box, components, fill_holes


def mask_from_skull_stripped(volume: Volume) -> np.ndarray:
    """Brain mask of an already skull-stripped image: clearly non-zero voxels, holes filled,
    largest connected component (interpolation leaves small non-zero values in the background)."""
    data = volume.data
    threshold = 0.02 * float(np.percentile(data[data > 0], 99)) if (data > 0).any() else 0.0
    foreground = data > threshold
    labels, count = components(foreground)
    if count == 0:
        raise BrainUADError(f"{volume.path}: no foreground to derive a brain mask from")
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (1 + int(np.argmax(sizes)))
    filled = np.stack([fill_holes(largest[:, :, z]) for z in range(largest.shape[2])], axis=2)
    return fill_holes(filled).astype(np.uint8)


def denoise(data: np.ndarray, time_step: float, iterations: int,
            mask: np.ndarray | None = None) -> np.ndarray:
    """SimpleITK CurvatureFlow: smooths noise while keeping edges, as the paper did. With a
    `mask`, only its bounding box is smoothed (with a margin of one voxel per iteration, so
    the voxels inside come out exactly as from the whole image): half of the template grid
    is outside the brain. Voxels outside the box are returned as they were."""
    box = bounding_box(mask, iterations + 1) if mask is not None else None
    box = box or (slice(None),) * data.ndim
    image = sitk.GetImageFromArray(np.ascontiguousarray(data[box], dtype=np.float32))
    smoothed = sitk.CurvatureFlow(image, timeStep=time_step, numberOfIterations=iterations)
    out = np.array(data, dtype=np.float32)
    out[box] = sitk.GetArrayFromImage(smoothed)
    return out


def scale_to_unit(data: np.ndarray, mask: np.ndarray, lower: float = 0.5,
                  upper: float = 99.5, keep_bright: bool = False) -> np.ndarray:
    """Map the brain's `lower`..`upper` percentiles to 0..1, clip, and zero outside the mask.
    With `keep_bright` nothing is clipped above: the brightest voxels (a small lesion load is
    all above the 99.5th percentile) keep their brightness above 1, for scorers that compare
    them with the scan's own tissues; the networks and the normative maps clip to [0, 1].
    Computed at the brain's voxels only (a fifth of the template grid): 0 outside, whatever
    lies there, in `data`'s memory order. A ValueError for an empty mask, NaN or infinite
    values inside it, or a constant brain."""
    brain = mask > 0
    inside = data[brain]
    if not inside.size:
        raise ValueError("the brain mask is empty")
    if not np.isfinite(inside).all():
        raise ValueError("the brain holds NaN or infinite intensities")
    lo, hi = np.percentile(inside, [lower, upper])
    if hi <= lo:
        raise ValueError("the brain's intensities are constant")
    out = np.zeros_like(data, dtype=np.float32)
    out[brain] = np.clip((inside - lo) / (hi - lo), 0, None if keep_bright else 1)
    return out


def robust_spread(values: np.ndarray, centre: float | None = None) -> float:
    """The normal-consistent median absolute deviation, `1.4826 * median(|x - median|)`: a
    spread that a few per cent of outliers (lesions) hardly move. Written once; the constant is
    the one flair-ms's thresholds were taken with (scipy's `median_abs_deviation(scale=
    "normal")` differs in the sixth digit)."""
    values = np.asarray(values)
    centre = float(np.median(values)) if centre is None else centre
    return float(1.4826 * np.median(np.abs(values - centre)))
