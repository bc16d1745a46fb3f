"""Scans the registration gate is checked on (issue 24), made from a real scan: hard but real
cases it must let through (warned at most) and broken ones it must refuse. Used by
`benchmarks/registration.py --parts q` and the realdata tests.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from brainuad.data.shifts import coarser
from brainuad.io.images import Volume


def broken_cases(data: np.ndarray, affine: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A scan's broken versions: its top third only, its axes mislabelled (superior written as
    anterior: the head lies rotated by 90 degrees)."""
    ornt = nib.orientations.io_orientation(affine)  # voxel axis -> (world axis, direction)
    axial = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    n = data.shape[axial]
    keep = slice(n - n // 3, n) if ornt[axial, 1] > 0 else slice(0, n // 3)
    index = [slice(None)] * 3
    index[axial] = keep
    cut_affine = affine.copy()
    cut_affine[:3, 3] = affine[:3, :3] @ [k.start or 0 for k in index] + affine[:3, 3]
    rotated = affine.copy()
    rotated[[1, 2], :] = affine[[2, 1], :]  # y and z world axes swapped: 90 degrees off
    rotated[1, :] *= -1
    return {"top third": (data[tuple(index)], cut_affine), "axes mislabelled": (data, rotated)}


def hard_cases(data: np.ndarray, affine: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hard but real cases made from a scan, which the gate must let through (warned at most):
    slices thickened to 6 mm, a large mass with oedema, low signal-to-noise, motion ghosts, and
    a field of view that misses the lowest 30 % of the head."""
    ornt = nib.orientations.io_orientation(affine)
    axial = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    phase = int(np.flatnonzero(ornt[:, 0] == 1)[0])
    head = data > np.percentile(data, 60)
    level = float(np.median(data[head]))
    centre = np.round(np.argwhere(head).mean(0)).astype(int)
    spacing = Volume(data, affine).spacing
    offset = np.zeros(3)
    offset[int(np.flatnonzero(ornt[:, 0] == 0)[0])] = 25 / spacing[0]  # 25 mm to one side
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape], indexing="ij"), -1)
    mm = np.linalg.norm((grid - centre - offset) * spacing, axis=-1)
    mass = data.copy()
    mass[mm < 35] = 1.3 * level  # oedema: bright on FLAIR
    mass[mm < 20] = 0.6 * level  # a necrotic core
    noisy = np.abs(data + np.random.default_rng(0).normal(0, 0.25 * level, data.shape))
    ghosts = data + 0.35 * np.roll(data, data.shape[phase] // 4, axis=phase)
    cut = data.copy()
    extent = np.flatnonzero(head.any(axis=tuple(a for a in range(3) if a != axial)))
    lowest = int(extent[0] + 0.3 * (extent[-1] - extent[0]))
    index = [slice(None)] * 3
    index[axial] = slice(0, lowest) if ornt[axial, 1] > 0 else slice(lowest + 1, None)
    cut[tuple(index)] = 0
    return {"slices thickened to 6 mm": (coarser(data, spacing, (axial,), 6.0), affine),
            "large mass with oedema": (mass, affine),
            "low signal-to-noise (noise 25 % of the head's level)": (noisy, affine),
            "motion ghosts (35 %, a quarter of the field shifted)": (ghosts, affine),
            "lowest 30 % of the head not in the field of view": (cut, affine)}


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """Not a brain: a noisy ellipsoidal cylinder (a bottle phantom) on a 1 x 1 x 3 mm grid."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, k) for k in (200, 200, 60)],
                                indexing="ij"))
    inside = (grid[0] ** 2 + (grid[1] / 0.7) ** 2) < 0.6
    data = (inside * (800 + 100 * grid[2]) + rng.normal(0, 20, inside.shape)).clip(0)
    return data.astype(np.float32), np.diag([1.0, 1.0, 3.0, 1.0])
