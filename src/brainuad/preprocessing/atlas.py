"""The atlas every scan is brought to: nilearn's MNI152 (2009) template, its brain mask and its
grey/white/CSF probability maps, shipped inside the nilearn wheel (nothing is downloaded).
"""

from __future__ import annotations

import functools

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from brainuad.io.images import Volume
from brainuad.io.sitk import from_sitk, to_sitk


@functools.lru_cache(maxsize=2)
def atlas(resolution: int) -> dict[str, np.ndarray]:
    """Tissue probability maps (CSF, GM, WM), brain mask and affine of nilearn's MNI152 template."""
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=resolution)
    gm = np.clip(gm_img.get_fdata(dtype=np.float32), 0, 1)
    wm_img = datasets.load_mni152_wm_template(resolution=resolution)
    wm = np.clip(wm_img.get_fdata(dtype=np.float32), 0, 1)
    brain = datasets.load_mni152_brain_mask(resolution=resolution).get_fdata(dtype=np.float32) > 0.5
    brain = ndimage.binary_fill_holes(brain | (gm + wm > 0.5))
    csf = np.clip(brain - gm - wm, 0, 1)
    spacing = float(resolution)
    # Ventricles: CSF deep inside the brain (far from its outer surface).
    depth = ndimage.distance_transform_edt(brain) * spacing
    ventricles = (csf > 0.6) & (depth > 15)
    dist_ventricle = ndimage.distance_transform_edt(~ventricles) * spacing
    return {
        "csf": csf.astype(np.float32), "gm": gm, "wm": wm, "brain": brain.astype(np.float32),
        "dist_ventricle": dist_ventricle.astype(np.float32),
        "affine": gm_img.affine.astype(np.float64),
    }


@functools.lru_cache(maxsize=1)
def template() -> tuple[sitk.Image, sitk.Image]:
    """nilearn's MNI152 (2009, 1 mm, skull stripped) T1 template and its brain mask."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    fixed = to_sitk(t1.get_fdata(dtype=np.float32), t1.affine)
    brain = to_sitk((mask.get_fdata() > 0.5).astype(np.float32), mask.affine)
    return fixed, sitk.Cast(brain, sitk.sitkUInt8)


def on_template_grid(volume: Volume) -> bool:
    """Already in nilearn's MNI152 space: the template's 1 mm grid, or the 2 mm one of synth."""
    if volume.shape == template_shape():
        return np.allclose(volume.affine, template_affine(), atol=1e-3)
    grid = atlas(2)
    return volume.shape == grid["wm"].shape and np.allclose(volume.affine, grid["affine"],
                                                            atol=1e-3)


@functools.lru_cache(maxsize=1)
def _template_grid() -> tuple[tuple[int, ...], np.ndarray]:
    data, affine = from_sitk(template()[0])
    return data.shape, affine


def template_shape() -> tuple[int, ...]:
    return _template_grid()[0]


def template_affine() -> np.ndarray:
    return _template_grid()[1]


def grid_resolution(shape: tuple[int, ...], affine: np.ndarray) -> int | None:
    """1 or 2 where (shape, affine) is nilearn's MNI grid at that many mm, else None."""
    return next((r for r in (1, 2) if atlas(r)["wm"].shape == tuple(shape)
                 and np.allclose(atlas(r)["affine"], affine, atol=1e-3)), None)
