"""Binary morphology of brain masks: scipy.ndimage's results, computed on the mask's bounding
box (half of a 1 mm template grid is outside the head) and, for hole filling, by labelling the
background once instead of scipy's iterated dilation. Exactly scipy's masks (tested), in a
third to a fifth of the time: these ran five times in every `segment` (2 s of it). Connected
components are connected-components-3d's: scipy's labels, in a quarter of its time."""

from __future__ import annotations

import cc3d
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


def components(mask: np.ndarray, full: bool = False) -> tuple[np.ndarray, int]:
    """`ndimage.label` of a 2D or 3D mask: its connected components (face-connected, or with
    `full` through edges and corners too, scipy's `generate_binary_structure(ndim, ndim)`),
    numbered as scipy numbers them (tests/test_morphology.py), and their count. C order first:
    connected-components-3d numbers in memory order, scipy in C order (the maps on a scan's
    grid come from SimpleITK transposed, in Fortran order)."""
    connectivity = {2: (4, 8), 3: (6, 26)}[mask.ndim][full]
    labels, count = cc3d.connected_components(np.ascontiguousarray(mask, dtype=bool),
                                              return_N=True,
                                              connectivity=connectivity, out_dtype=np.uint32)
    return labels, int(count)


def _on_box(mask: np.ndarray, operation, margin: int = 1) -> np.ndarray:
    """`operation` on `mask`'s bounding box grown by `margin` voxels (the structure's reach),
    background elsewhere: for the operations below, scipy's result on the whole array
    (tests/test_morphology.py)."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask, margin)
    out = np.zeros(mask.shape, dtype=bool)
    if box is not None:
        out[box] = operation(mask[box])
    return out


def _filled(box: np.ndarray) -> np.ndarray:
    labels, _ = components(np.pad(~box, 1, constant_values=True))
    return (labels != labels.flat[0])[(slice(1, -1),) * box.ndim]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`ndimage.binary_fill_holes` (face-connected background): everything but the background
    that reaches the border, found as the one background component around the padded box."""
    return _on_box(mask, _filled)


def dilate(mask: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
    """`ndimage.binary_dilation(mask, structure)`: one step of `structure` (centred, scipy's
    origin 0), by default the face-connected cross; the box's margin is its reach."""
    margin = 1 if structure is None else max(n // 2 for n in np.shape(structure))
    return _on_box(mask, lambda box: ndimage.binary_dilation(box, structure), margin)


def erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """`ndimage.binary_erosion(mask, iterations=iterations)` (outside the array is background)."""
    return _on_box(mask, lambda box: ndimage.binary_erosion(box, iterations=iterations))


def eroded_mask(mask: np.ndarray, spacing: np.ndarray, erosion_mm: float) -> np.ndarray:
    """Erode the brain mask by about `erosion_mm` (at least one voxel when erosion_mm > 0), so
    the bright rim of the brain, which no model reconstructs well, does not become lesions."""
    iterations = int(round(erosion_mm / float(np.min(spacing)))) if erosion_mm > 0 else 0
    if iterations == 0 and erosion_mm > 0:
        iterations = 1
    if iterations == 0:
        return mask > 0
    return erode(mask > 0, iterations)
