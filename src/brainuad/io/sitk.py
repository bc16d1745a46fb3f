"""numpy (RAS, as nibabel) <-> SimpleITK (LPS) images, and ITK's errors in one line."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

#: RAS (nibabel) <-> LPS (ITK): flip the first two world axes.
_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A float32 SimpleITK image from an (X, Y, Z) array and its RAS affine."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).T))
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((_LPS @ (linear / spacing)).ravel().tolist())
    image.SetOrigin((_LPS @ affine[:3, 3]).tolist())
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) array and RAS affine of a SimpleITK image."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ direction * np.array(image.GetSpacing())
    affine[:3, 3] = _LPS @ np.array(image.GetOrigin())
    return sitk.GetArrayFromImage(image).T, affine


def itk_reason(err: Exception) -> str:
    """The one line of an ITK exception that says what went wrong."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Description:" in line:
            return line.split("Description:", 1)[1].strip()
    return lines[-1] if lines else type(err).__name__
