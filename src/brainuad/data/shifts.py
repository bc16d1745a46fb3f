"""Protocol shifts simulated on a scan as it leaves the scanner: what another scanner or
protocol changes in a FLAIR without changing the brain. A detector that holds across protocols
flags (nearly) nothing more on a shifted healthy scan than on the scan itself.

    thick_slices  slices of `THICK_MM` (partial volume through the plane), resampled back
    contrast      the tissues' brightness relative to each other (a gamma of the intensities:
                  darker grey-white contrast and brighter CSF, as a 3D FLAIR has next to 2D)
    bias          a smooth multiplicative bias field (torchio's, polynomial of order 3)
    noise         Gaussian noise of `NOISE` x the brain's median intensity
    inplane       in-plane voxels twice as large, resampled back
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from brainuad.errors import BrainUADError
from brainuad.io.images import Volume

SHIFTS = ("none", "thick_slices", "contrast", "bias", "noise", "inplane")
THICK_MM = 5.0
GAMMA = 0.7
BIAS_COEFFICIENT = 0.5
NOISE = 0.03


def shifted(volume: Volume, shift: str, seed: int = 0) -> Volume:
    """`volume` (a raw scan) under `shift`; the same seed, the same bytes."""
    if shift not in SHIFTS:
        raise BrainUADError(f"protocol shift {shift!r}: choose one of {', '.join(SHIFTS)}")
    data = np.asarray(volume.data, np.float32)
    foreground = data > np.percentile(data, 50)
    if shift == "thick_slices":
        data = coarser(data, volume.spacing, axes=(2,), mm=THICK_MM)
    elif shift == "inplane":
        data = coarser(data, volume.spacing, axes=(0, 1), mm=2 * float(volume.spacing[0]))
    elif shift == "contrast":
        top = float(np.percentile(data[foreground], 99.5))
        data = top * np.clip(data / top, 0, None) ** GAMMA
    elif shift == "bias":
        import torchio as tio

        torch.manual_seed(seed)
        image = tio.ScalarImage(tensor=torch.from_numpy(data[None]), affine=volume.affine)
        data = tio.RandomBiasField(coefficients=BIAS_COEFFICIENT)(image).numpy()[0]
    elif shift == "noise":
        scale = NOISE * float(np.median(data[foreground]))
        data = np.abs(data + np.random.default_rng(seed).normal(0, scale, data.shape))
    return Volume(data.astype(np.float32), volume.affine, volume.path)


def coarser(data: np.ndarray, spacing: np.ndarray, axes: tuple[int, ...],
            mm: float) -> np.ndarray:
    """Voxels of `mm` along `axes` (averaged over their extent), linearly resampled back."""
    factors = np.ones(3)
    for axis in axes:
        factors[axis] = max(mm / float(spacing[axis]), 1.0)
    if (factors == 1).all():
        return data
    # a box of the thick voxel's extent, then samples every `factor` voxels
    smooth = ndimage.uniform_filter(data, size=np.maximum(np.round(factors), 1).astype(int))
    small = ndimage.zoom(smooth, 1 / factors, order=1)
    back = ndimage.zoom(small, np.array(data.shape) / np.array(small.shape), order=1)
    out = np.zeros_like(data)  # zoom's rounding may leave a voxel more or less on an axis
    common = tuple(slice(0, min(a, b)) for a, b in zip(data.shape, back.shape, strict=True))
    out[common] = back[common]
    return out


def rescanned(volume: Volume, seed: int) -> Volume:
    """The same head scanned again: moved rigidly (up to 5 degrees and 5 mm, resampled on its
    own grid), a new bias field and new noise. A pair of `volume` and this has no change."""
    import SimpleITK as sitk

    from brainuad.io.sitk import from_sitk, to_sitk
    from brainuad.preprocessing.transforms import resample

    rng = np.random.default_rng(seed)
    image = to_sitk(volume.data, volume.affine)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(image.TransformContinuousIndexToPhysicalPoint(np.array(image.GetSize()) / 2))
    rigid.SetRotation(*np.deg2rad(rng.uniform(-5, 5, 3)))
    rigid.SetTranslation(rng.uniform(-5, 5, 3).tolist())
    moved = from_sitk(resample(image, image, rigid))[0]
    moved = shifted(Volume(moved, volume.affine), "bias", seed)
    return shifted(moved, "noise", seed + 1)
