"""The atlas every scan is brought to: nilearn's MNI152 (2009) template, its brain mask and its
grey/white/CSF probability maps, shipped inside the nilearn wheel (nothing is downloaded).

At 1 mm the files are read as nilearn's loaders read them (scaled to a maximum of 1) but
without importing `nilearn.datasets`, which pulls in scikit-learn and pandas: 3 s of every
`segment`. Other resolutions are nilearn's resampling of them.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from brainuad.io.images import Volume
from brainuad.io.sitk import from_sitk, to_sitk
from brainuad.preprocessing.morphology import fill_holes

_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
          "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
          "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
BRAIN_THRESHOLD = 0.2  # of the scaled T1 template: nilearn's load_mni152_brain_mask


def _nilearn_map(name: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """One of nilearn's MNI152 maps, scaled to a maximum of 1, and its affine."""
    if resolution != 1:
        from nilearn import datasets

        image = {"t1": datasets.load_mni152_template, "gm": datasets.load_mni152_gm_template,
                 "wm": datasets.load_mni152_wm_template}[name](resolution=resolution)
        return image.get_fdata(dtype=np.float32), image.affine.astype(np.float64)
    spec = importlib.util.find_spec("nilearn")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    image = nib.load(folder / _FILES[name])
    data = np.asarray(image.dataobj).astype(np.float32)
    return data / data.max(), image.affine.astype(np.float64)


@functools.lru_cache(maxsize=2)
def atlas(resolution: int) -> dict[str, np.ndarray]:
    """Tissue probability maps (CSF, GM, WM), brain mask and affine of nilearn's MNI152 template."""
    gm, affine = _nilearn_map("gm", resolution)
    wm = np.clip(_nilearn_map("wm", resolution)[0], 0, 1)
    gm = np.clip(gm, 0, 1)
    brain = _nilearn_map("t1", resolution)[0] > BRAIN_THRESHOLD
    brain = fill_holes(brain | (gm + wm > 0.5))
    csf = np.clip(brain - gm - wm, 0, 1)
    return {"csf": csf.astype(np.float32), "gm": gm, "wm": wm, "brain": brain.astype(np.float32),
            "affine": affine}


@functools.lru_cache(maxsize=2)
def ventricle_distance(resolution: int) -> np.ndarray:
    """mm from the ventricles (CSF deep inside the brain, far from its outer surface). Two
    distance transforms: seconds, so only where synthetic lesions are placed."""
    maps = atlas(resolution)
    depth = ndimage.distance_transform_edt(maps["brain"] > 0) * resolution
    ventricles = (maps["csf"] > 0.6) & (depth > 15)
    return (ndimage.distance_transform_edt(~ventricles) * resolution).astype(np.float32)


@functools.lru_cache(maxsize=1)
def template() -> tuple[sitk.Image, sitk.Image]:
    """nilearn's MNI152 (2009, 1 mm, skull stripped) T1 template and its brain mask."""
    t1, affine = _nilearn_map("t1", 1)
    fixed = to_sitk(t1, affine)
    brain = to_sitk((t1 > BRAIN_THRESHOLD).astype(np.float32), affine)
    return fixed, sitk.Cast(brain, sitk.sitkUInt8)


def on_template_grid(volume: Volume) -> bool:
    """Already in nilearn's MNI152 space: the template's 1 mm grid, or the 2 mm one of synth."""
    if volume.shape == template_shape():
        return np.allclose(volume.affine, template_affine(), atol=1e-3)
    if not np.allclose(np.abs(np.diag(volume.affine[:3, :3])), 2.0):
        return False  # not a 2 mm grid: no need to build the 2 mm atlas (seconds) to say so
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


def regrid(data: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target: np.ndarray,
           order: int = 1) -> np.ndarray:
    """`data` (on `affine`) onto the grid `(shape, target)`, through world coordinates (an
    atlas map onto a scan's atlas-space grid of another resolution)."""
    if tuple(data.shape) == tuple(shape) and np.allclose(affine, target, atol=1e-3):
        return data
    voxels = np.linalg.inv(affine) @ target  # target voxel -> source voxel
    return ndimage.affine_transform(np.asarray(data, np.float32), voxels[:3, :3],
                                    voxels[:3, 3], output_shape=tuple(shape), order=order,
                                    mode="constant", cval=0.0)
