"""Where a healthy FLAIR is bright: the textbook normal-variant sites, in atlas space.

Every FLAIR shows thin bright caps at the tips of the lateral ventricles' frontal and occipital
horns (ependymal caps), a bright septum pellucidum, a rim around the aqueduct (periaqueductal
grey) and the floor of the fourth ventricle (area postrema). A component that lies mostly in
these places is left out of the mask (`DetectConfig.normal_sites` "remove", flair-ms from
version 5) or flagged in lesions.csv (`site`) and the report ("flag"), so a reader can tell
them from MS lesions, which are ovoid and cross into the white matter (a lesion at a horn tip
that reaches into the white matter lies mostly outside the band and stays).

The sites are built from nilearn's MNI152 template alone: its CSF prior (`atlas`) gives the
lateral ventricles (the largest fluid component beside the midline at the level of their
bodies), the aqueduct and the fourth ventricle (fluid in their boxes of MNI coordinates), and
each site is a band of tissue around them. Nothing is learnt from scans.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from brainuad.preprocessing.atlas import atlas
from brainuad.preprocessing.morphology import bounding_box, components, dilate

#: the sites, by their code in `normal_sites`' map
SITES = {1: "ependymal cap", 2: "septum pellucidum", 3: "periaqueductal grey",
         4: "floor of the fourth ventricle"}
#: how far (mm) a cap reaches from the horn, and how long (mm) a horn's tip is
CAP_MM, FRONTAL_TIP_MM, OCCIPITAL_TIP_MM = 5.0, 10.0, 12.0
#: the rim around the aqueduct and the band on the fourth ventricle's floor (mm)
PAG_MM, FLOOR_MM = 4.0, 3.0
#: the aqueduct's ends in MNI152 mm: from the posterior commissure down and back to the fourth
#: ventricle's top (too thin for the template's CSF prior to show, and the quadrigeminal
#: cistern behind it is fluid too: a fluid box took the cistern)
AQUEDUCT = (np.array([0.0, -28.0, -4.0]), np.array([0.0, -38.0, -16.0]))
#: a component is at a normal-variant site when at least this part of it lies there
MIN_INSIDE = 0.5


def _grown(mask: np.ndarray, mm: float, spacing: float) -> np.ndarray:
    """`mask` dilated by a ball of `mm`, computed in the box around it."""
    box = bounding_box(mask, int(np.ceil(mm / spacing)) + 1)
    if box is None:
        return mask.copy()
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= mm
    return out


def _largest(mask: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The component of `mask` with the most voxels in `where`."""
    labels, _ = components(mask)
    counts = np.bincount(labels[where & mask], minlength=labels.max() + 1)
    counts[0] = 0
    return labels == int(np.argmax(counts)) if counts.any() else np.zeros_like(mask)


@functools.lru_cache(maxsize=2)
def normal_sites(resolution: int = 1) -> np.ndarray:
    """The sites (`SITES` codes, 0 elsewhere; uint8) on nilearn's MNI grid of `resolution` mm
    (the template is axis-aligned: its world coordinates are per-axis vectors)."""
    maps = atlas(resolution)
    affine, brain, csf = maps["affine"], maps["brain"] > 0, maps["csf"]
    x, y, z = (affine[axis, axis] * np.arange(n) + affine[axis, 3]
               for axis, n in enumerate(csf.shape))
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    fluid = csf > 0.5
    bodies = (np.abs(x) > 4) & (np.abs(x) < 25) & (np.abs(y) < 20) & (z > 10) & (z < 25)
    lateral = _largest(fluid, bodies)
    sites = np.zeros(csf.shape, np.uint8)
    for side in (x > 0, x < 0):
        horn = lateral & side & (z > -2)
        ys = np.broadcast_to(y, horn.shape)[horn]
        if not ys.size:
            continue
        front, back = ys.max(), ys.min()
        tips = horn & ((y > front - FRONTAL_TIP_MM) | (y < back + OCCIPITAL_TIP_MM))
        sites[_grown(tips, CAP_MM, resolution) & ~lateral & side & brain] = 1
    # the septum: tissue at the midline with a ventricle on either side within 6 mm
    reach = np.ones((int(round(12 / resolution)) + 1, 1, 1), bool)
    left, right = dilate(lateral & (x < 0), reach), dilate(lateral & (x > 0), reach)
    sites[(np.abs(x) <= 3) & left & right & ~lateral & brain] = 2
    start, end = AQUEDUCT
    near = tuple(np.flatnonzero((axis >= min(a, b) - PAG_MM) & (axis <= max(a, b) + PAG_MM))
                 for axis, a, b in zip((x.ravel(), y.ravel(), z.ravel()), start, end,
                                       strict=True))
    box = np.ix_(*near)  # the segment's box: the distances there only
    points = np.stack(np.broadcast_arrays(x.ravel()[near[0]][:, None, None],
                                          y.ravel()[near[1]][None, :, None],
                                          z.ravel()[near[2]][None, None, :]), -1) - start
    along = end - start
    t = np.clip(points @ along / along.dot(along), 0, 1)
    from_line = np.linalg.norm(points - t[..., None] * along, axis=-1)
    sites[box] = np.where((from_line <= PAG_MM) & ~fluid[box] & brain[box], 3, sites[box])
    box = (np.abs(x) <= 12) & (y > -58) & (y < -32) & (z > -48) & (z < -18)
    fourth = _largest(fluid & box, box)
    if fourth.any():
        floor = y > np.broadcast_to(y, fourth.shape)[fourth].mean()  # its ventral wall
        sites[_grown(fourth, FLOOR_MM, resolution) & ~fourth & floor & brain] = 4
    sites[fluid] = 0  # tissue only: the bands also reached other fluid (sulci, cisterns)
    return sites


def lesion_sites(numbered: np.ndarray, sites: np.ndarray, count: int) -> list[str]:
    """For lesions 1..`count` of `numbered` (on the grid of `sites`, a `normal_sites` map
    carried there): the name of the normal-variant site where at least `MIN_INSIDE` of the
    lesion lies (the one most of it lies in), else ""."""
    where = numbered > 0
    labels, codes = numbered[where].astype(np.int64), sites[where].astype(np.int64)
    size = np.bincount(labels, minlength=count + 1)
    per_site = np.bincount(labels * (len(SITES) + 1) + codes,
                           minlength=(count + 1) * (len(SITES) + 1)).reshape(count + 1, -1)
    inside = per_site[:, 1:].sum(1)
    return [SITES[int(np.argmax(per_site[n, 1:])) + 1]
            if size[n] and inside[n] >= MIN_INSIDE * size[n] else ""
            for n in range(1, count + 1)]
