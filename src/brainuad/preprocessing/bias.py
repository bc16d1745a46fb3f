"""Bias-field correction of a raw scan (N4, SimpleITK), inside its head's foreground."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from brainuad.preprocessing.morphology import components, fill_holes

if TYPE_CHECKING:
    from brainuad.preprocessing.registration import RegistrationConfig


def head_mask(image: sitk.Image) -> sitk.Image:
    """Foreground (head) of a raw scan: Otsu threshold, largest component, holes filled."""
    foreground = sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1)) > 0
    labels, count = components(foreground)
    if count:
        sizes = np.bincount(labels.ravel())[1:]
        foreground = fill_holes(labels == 1 + int(np.argmax(sizes)))
    out = sitk.GetImageFromArray(foreground.astype(np.uint8))
    out.CopyInformation(image)
    return out


def shrink_factors(size: tuple[int, ...], shrink: int) -> list[int]:
    """`shrink` per axis, less along an axis of few voxels: two voxels are left at least."""
    return [max(1, min(shrink, n // 2)) for n in size]


def n4(image: sitk.Image, mask: sitk.Image, cfg: RegistrationConfig) -> sitk.Image:
    """N4 bias-field correction inside `mask`, fitted on a copy shrunk `cfg.n4_shrink` times
    (seconds, not minutes) and applied at full resolution through the fitted log bias field;
    one fitting level per entry of `cfg.n4_iterations`, each doubling the B-spline mesh. An
    axis of few voxels (a slab of a few slices) is shrunk less, to two voxels at least."""
    factors = shrink_factors(image.GetSize(), cfg.n4_shrink)
    small = sitk.Shrink(image, factors)
    small_mask = sitk.Shrink(mask, factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(cfg.n4_iterations))
    corrector.Execute(small, small_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    return image / sitk.Exp(log_bias)
