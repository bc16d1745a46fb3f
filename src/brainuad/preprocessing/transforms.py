"""Moving images and maps between grids: ITK transforms as 4 x 4 matrices, resampling, a
subject's atlas -> scan transform written and read back (ITK text only), and its maps carried
between the atlas and the scan's own grid.

Every transform maps points of the *fixed* space to the *moving* one (ITK's convention): the
atlas-to-scan transform of a subject is what resampling the scan onto the atlas grid needs, and
its inverse carries detection maps back onto the scan's own grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainuad.errors import BrainUADError
from brainuad.io.files import atomic_path
from brainuad.io.sitk import from_sitk, to_sitk


def matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4 x 4 homogeneous matrix (LPS, fixed -> moving) of a rigid or affine transform."""
    linear = np.array(transform.GetMatrix()).reshape(3, 3)
    centre = np.array(transform.GetCenter())
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre + np.array(transform.GetTranslation()) - linear @ centre
    return out


def affine_transform(homogeneous: np.ndarray) -> sitk.AffineTransform:
    out = sitk.AffineTransform(3)
    out.SetMatrix(homogeneous[:3, :3].ravel().tolist())
    out.SetTranslation(homogeneous[:3, 3].tolist())
    return out


def resample(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform,
             nearest: bool = False) -> sitk.Image:
    """`image` on `grid`'s voxels, through `transform` (grid points -> image points)."""
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, grid, transform, interpolator, 0.0, image.GetPixelID())


def write_transform(path: Path, transform: sitk.Transform) -> Path:
    with atomic_path(Path(path)) as tmp:
        sitk.WriteTransform(transform, str(tmp))  # tmp keeps the .tfm suffix ITK needs
    return Path(path)


def read_transform(path: Path) -> sitk.AffineTransform:
    """An atlas -> scan transform file: ITK text (`.tfm`) only, never HDF5 or MATLAB files
    (binary formats whose readers are more attack surface); anything else is a clear error."""
    if Path(path).suffix != ".tfm":
        raise BrainUADError(f"{path}: transforms are read only as ITK text files (.tfm)")
    try:
        head = Path(path).read_bytes()[:64]
    except OSError as err:
        raise BrainUADError(f"{path}: cannot be read ({err.strerror})") from err
    if not head.startswith(b"#Insight Transform File"):
        raise BrainUADError(f"{path}: not a readable ITK text transform file")
    try:
        transform = sitk.ReadTransform(str(path))
        if not hasattr(transform, "GetMatrix") and len(transform.GetParameters()) == 12:
            # a matrix-and-offset transform of another tool (as MatrixOffsetTransformBase)
            affine = sitk.AffineTransform(3)
            affine.SetFixedParameters(transform.GetFixedParameters())
            affine.SetParameters(transform.GetParameters())
            transform = affine
        homogeneous = matrix(transform)
    except (RuntimeError, AttributeError) as err:  # unreadable, or not a linear transform
        raise BrainUADError(f"{path}: not a readable ITK affine transform file") from err
    if not np.isfinite(homogeneous).all() or abs(np.linalg.det(homogeneous[:3, :3])) < 1e-6:
        raise BrainUADError(f"{path}: transform is degenerate")
    return affine_transform(homogeneous)


def to_atlas(data: np.ndarray, affine: np.ndarray, atlas_shape: tuple[int, ...],
             atlas_affine: np.ndarray, transform: sitk.Transform,
             nearest: bool = False) -> np.ndarray:
    """A map on a scan's own grid (e.g. its lesion label) resampled onto the atlas grid, given
    the subject's atlas -> scan transform."""
    grid = to_sitk(np.zeros(atlas_shape, np.float32), atlas_affine)
    return from_sitk(resample(to_sitk(data, affine), grid, transform, nearest))[0]


def to_native(data: np.ndarray, affine: np.ndarray, native: sitk.Image,
              transform: sitk.Transform, nearest: bool = False) -> np.ndarray:
    """An atlas-space map `(X, Y, Z)` resampled onto a scan's own grid, given the subject's
    atlas -> scan transform (its inverse takes scan voxels to the atlas)."""
    image = to_sitk(data, affine)
    return from_sitk(resample(image, native, transform.GetInverse(), nearest))[0]


def _whole(value: np.ndarray) -> bool:
    """A mask or label codes: booleans or whole numbers >= 0 (no NaN)."""
    if value.dtype.kind in "bu":
        return True
    return bool(value.size) and bool(np.all((value >= 0) & (value == np.round(value))))


def maps_to_native(maps: dict[str, np.ndarray], affine: np.ndarray, native: sitk.Image,
                   transform: sitk.Transform) -> dict[str, np.ndarray]:
    """A subject's atlas-space maps on its scan's own grid (float32): the `score` linearly,
    every other map (masks, label codes: whole numbers >= 0) by nearest neighbour, all of
    them in one resampling, packed as bit fields of one number per voxel (nearest neighbour
    takes every map's value from the same voxel; four resamplings were 0.25 s a scan). A map
    of other values (fractions, NaN, negative numbers) is resampled on its own."""
    out, codes = {}, {}
    for name, value in maps.items():
        value = np.asarray(value)
        if name != "score" and _whole(value):
            codes[name] = value
        else:  # the score, and any map that is not whole numbers >= 0: one resampling each
            out[name] = to_native(value.astype(np.float32), affine, native, transform,
                                  nearest=name != "score")
    packed, fields, shift = None, {}, 0
    for name, value in codes.items():
        bits = max(int(value.max(initial=0)), 1).bit_length()
        if shift + bits > 24:  # float32, which the resampling runs in, is exact up to 2^24
            out[name] = to_native(value.astype(np.float32), affine, native, transform, True)
            continue
        packed = np.zeros(value.shape, np.uint32) if packed is None else packed
        packed |= value.astype(np.uint32) << np.uint32(shift)
        fields[name], shift = (shift, bits), shift + bits
    if packed is None:
        return {name: out[name] for name in maps}
    moved = to_native(packed.astype(np.float32), affine, native, transform,
                      nearest=True).astype(np.uint32)
    for name, (low, bits) in fields.items():
        out[name] = ((moved >> np.uint32(low)) & np.uint32((1 << bits) - 1)).astype(np.float32)
    return {name: out[name] for name in maps}
