"""Binary morphology of brain masks: scipy.ndimage's results, computed on the mask's bounding
box (half of a 1 mm template grid is outside the head) and, for hole filling, by labelling the
background once instead of scipy's iterated dilation. Exactly scipy's masks (tested), in a
third to a fifth of the time: these ran five times in every `segment` (2 s of it)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The bounding box of `mask`'s non-zero voxels grown by `margin` voxels (clipped to the
    array), or None for an empty mask."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0),
                         min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`ndimage.binary_fill_holes` (face-connected background): everything but the background
    that reaches the border, found as the one background component around the padded box."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask, 1)
    out = np.zeros(mask.shape, dtype=bool)
    if box is None:
        return out
    labels, _ = ndimage.label(np.pad(~mask[box], 1, constant_values=True))
    out[box] = (labels != labels.flat[0])[(slice(1, -1),) * mask.ndim]
    return out


def dilate(mask: np.ndarray) -> np.ndarray:
    """`ndimage.binary_dilation(mask)`: one step of the face-connected cross."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask, 1)
    out = np.zeros(mask.shape, dtype=bool)
    if box is not None:
        out[box] = ndimage.binary_dilation(mask[box])
    return out


def erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """`ndimage.binary_erosion(mask, iterations=iterations)` (outside the array is background)."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask, 1)
    out = np.zeros(mask.shape, dtype=bool)
    if box is not None:
        out[box] = ndimage.binary_erosion(mask[box], iterations=iterations)
    return out
