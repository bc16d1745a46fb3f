"""The paper's post-processing of residuals: median filter, eroded brain mask, threshold, and
removal of small 3D components. Each number comes from `DetectConfig`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: 26-connectivity: voxels touching by a corner belong to the same 3D component.
CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


def residual_map(images: np.ndarray, reconstructions: np.ndarray, masks: np.ndarray,
                 kind: str = "abs", hyper_floor: float | None = None) -> np.ndarray:
    """The residual the detector scores, zero outside the brain (a network's output there is not
    evidence of anything). `abs`: |x - x_hat| (the paper); `positive`: max(x - x_hat, 0);
    `hyperintense`: positive, and zero where the input is below `hyper_floor` (the input's 0.9
    brain quantile in Baur et al. 2021: MS lesions on FLAIR are bright, so a residual on dark
    tissue is a reconstruction error, not a lesion)."""
    return shape_residual(images - reconstructions, images, masks, kind, hyper_floor)


def shape_residual(difference: np.ndarray, images: np.ndarray, masks: np.ndarray,
                   kind: str = "abs", hyper_floor: float | None = None) -> np.ndarray:
    """`residual_map`'s `kind` applied to a signed `difference` (image minus what was
    expected: a reconstruction, or a normative z-score), zero outside `masks`."""
    if kind == "abs":
        residual = np.abs(difference)
    else:
        residual = np.maximum(difference, 0)
    if kind == "hyperintense":
        if hyper_floor is None:
            raise ValueError("the hyperintense residual needs the input's brain quantile")
        residual = np.where(images >= hyper_floor, residual, 0)
    return residual * masks


def median_filter(stack: np.ndarray, size: int = 5, where: np.ndarray | None = None,
                  chunk: int = 65_536) -> np.ndarray:
    """Median over a size^3 window of residual slices stacked as a sub-volume `(N, S, S)`.

    Done on the stack, as the paper did, so the `paper` block of 20 slices is filtered as a
    sub-volume of its own (edges reflect, as scipy's `mode="reflect"`) instead of mixing in
    unprocessed slices. With `where`, only those voxels are computed (the rest are 0): the same
    values as `scipy.ndimage.median_filter` there, about 6x faster on a brain, because only the
    brain's voxels are ever scored and `np.partition` selects the median without a full sort.
    """
    if size <= 1:
        return stack
    if where is None:
        return ndimage.median_filter(stack, size=size, mode="reflect")
    half = size // 2
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(stack, half, mode="symmetric"), (size,) * 3)
    index = np.nonzero(where)
    values = np.empty(len(index[0]), stack.dtype)
    middle = size**3 // 2
    for start in range(0, len(values), chunk):
        part = tuple(i[start:start + chunk] for i in index)
        block = windows[part].reshape(-1, size**3)
        values[start:start + chunk] = np.partition(block, middle, axis=1)[:, middle]
    out = np.zeros_like(stack)
    out[index] = values
    return out


def eroded_mask(mask: np.ndarray, spacing: np.ndarray, erosion_mm: float) -> np.ndarray:
    """Erode the brain mask by about `erosion_mm` (at least one voxel when erosion_mm > 0), so
    the bright rim of the brain, which no model reconstructs well, does not become lesions."""
    iterations = int(round(erosion_mm / float(np.min(spacing)))) if erosion_mm > 0 else 0
    if iterations == 0 and erosion_mm > 0:
        iterations = 1
    if iterations == 0:
        return mask > 0
    return ndimage.binary_erosion(mask > 0, iterations=iterations)


def remove_small_components(binary: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 3D connected components with fewer than `min_size` voxels."""
    labels, count = ndimage.label(binary, structure=CONNECTIVITY)
    if count == 0 or min_size <= 1:
        return binary.astype(bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def segment(score: np.ndarray, threshold: float, min_component: int) -> np.ndarray:
    """Binary lesion mask: score above threshold, without components under `min_component`."""
    return remove_small_components(score > threshold, min_component)
