"""Raw scans into atlas space: rigid-then-affine registration to the MNI152 template shipped
in nilearn, with SimpleITK only (nothing outside pip), and its settings (`RegistrationConfig`,
N4's and the gate's included). N4 is in `bias.py`, the transforms and resampling in
`transforms.py`, the judging of the registration's plausibility figures (`quality`) in
`registration_gate.py`.

Every transform here maps points of the *fixed* space to the *moving* one (ITK's convention).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from brainuad.errors import BrainUADError
from brainuad.io.sitk import itk_reason
from brainuad.preprocessing.atlas import template
from brainuad.preprocessing.transforms import affine_transform, matrix, resample


@dataclass(frozen=True)
class RegistrationConfig:
    # The atlas registration (`to_template`) runs on the template and the scan both averaged to
    # voxels of about this size (whole voxels binned, `coarse`): on the 1 mm template with the
    # scan at about 1 mm it took 8-11 s per raw FLAIR, at 2 mm about 2 s, and the known-transform
    # error of benchmarks/registration.py fell (mean 0.90 -> 0.60 mm, max 1.37 -> 0.99 mm;
    # docs/preprocessing/registration.md). `shrink` counts voxels of this grid for the atlas
    # registration, and of the images themselves in `register`.
    working_mm: float = 2.0
    shrink: tuple[int, ...] = (4, 2, 1)  # pyramid levels
    smoothing_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    iterations: int = 100  # per level and stage
    # The optimizer stops when its step falls below this (mm of shift, the parameters being
    # scaled by physical shift): 1e-4 ran most levels to their 100 iterations, 1e-2 doubled
    # the known-transform error of the heavy-lesion 3D FLAIR (docs/speed.md).
    min_step: float = 1e-3
    # The optimizer's first step (mm), at every level. At 2.0 the affine stage of the 2 mm
    # set-up left the brain on 1 of 55 raw-FLAIR registrations (11 scans x 5 sampling seeds:
    # mutual information 0.28 worse than the others'); at 1.0 on none
    # (docs/preprocessing/registration.md).
    learning_rate: float = 1.0
    # Levels (of `shrink`) the rigid stage runs before the affine stage takes over: the rigid
    # stage only starts the affine one (at the coarsest level alone it lost scans by 10-50 mm).
    rigid_levels: int = 2
    # Fraction of the sampled region's voxels the metric samples, per level (or one for all):
    # dense where the images are small. A uniform 2 % left the coarse levels with too few
    # samples (known-transform error 3-5 mm); on the 2 mm grid (1.0, 0.25, 0.05) is about 4.5,
    # 9 and 14 thousand samples; (0.25, 0.1) on two levels lost a scan
    # (docs/preprocessing/registration.md).
    sampling: float | tuple[float, ...] = (1.0, 0.25, 0.05)
    bins: int = 32  # Mattes mutual information histogram bins
    # N4 fits its bias field on the scan shrunk this many voxels per axis (its B-spline mesh is
    # far coarser): 6 instead of 4 fits in 0.79 s instead of 1.66 s on the raw 2D FLAIRs,
    # moving the corrected intensities by 1.7 % (benchmarks/n4_settings.py), within the
    # cross-protocol validation's noise (docs/results/cross_protocol.md, round 5).
    n4_shrink: int = 6
    n4_iterations: tuple[int, ...] = (50, 40, 30)
    seed: int = 1  # SimpleITK reads 0 as "seed from the wall clock": not reproducible
    # Plausibility of a registration (`quality`); below these a scan is refused, not segmented
    # on a misregistered brain. Set from the real scans of ../shared/data (all pass) and broken
    # cases (benchmarks/registration.py --parts q): see docs/preprocessing/registration.md.
    min_brain_dice: float = 0.80
    min_coverage: float = 0.90
    scale_range: tuple[float, float] = (0.75, 1.35)
    # Mattes MI (32 bins) to the T1 template at the last level: real scans -0.40..-0.57 (on
    # the 1 mm set-up before: -0.31..-0.49, bound -0.27): docs/preprocessing/registration.md
    max_metric: float = -0.36
    max_rotation: float = 45.0  # degrees: real heads lie within a few tens of them
    # "refuse": a broken registration (two figures out of bound) stops the scan, a doubtful one
    # (one figure) is a warning; "warn": both are warnings, the figures in the outputs.
    qc: str = "refuse"

    def __post_init__(self) -> None:
        if self.qc not in ("refuse", "warn"):
            raise BrainUADError(f"--qc {self.qc!r}: choose refuse or warn")
    # Above the refusal bounds but below these, a scan is segmented with a QC warning: look at
    # the registration in the report before trusting the mask.
    warn_brain_dice: float = 0.88
    warn_coverage: float = 0.97


def _method(cfg: RegistrationConfig, fixed_mask: sitk.Image | None,
            levels: int | None = None,
            moving_mask: sitk.Image | None = None) -> sitk.ImageRegistrationMethod:
    """Multi-resolution Mattes mutual information: works across contrasts (FLAIR, T2 or T1
    against the T1 template) because it needs no linear relation between intensities."""
    levels = levels or len(cfg.shrink)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg.bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    sampling = (cfg.sampling,) * levels if isinstance(cfg.sampling, float) else cfg.sampling
    if cfg.seed == sitk.sitkWallClock:
        raise BrainUADError("registration seed 0 means the wall clock in SimpleITK; use >= 1")
    method.SetMetricSamplingPercentagePerLevel(list(sampling[:levels]), cfg.seed)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        method.SetMetricMovingMask(moving_mask)
    method.SetInterpolator(sitk.sitkLinear)
    # Regular-step gradient descent: on a moved MNI template it recovered a known affine to
    # 0.16 mm where plain gradient descent (learning rate estimated once) stopped 2-4 mm short.
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=cfg.learning_rate, minStep=cfg.min_step, numberOfIterations=cfg.iterations,
        gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(cfg.shrink[:levels]))
    method.SetSmoothingSigmasPerLevel(list(cfg.smoothing_mm[:levels]))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _run(method: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image,
         what: str) -> float:
    """Execute, and return the final metric value; ITK's failures as one-line errors."""
    try:
        method.Execute(fixed, moving)
    except RuntimeError as err:  # e.g. "All samples map outside moving image buffer"
        raise BrainUADError(f"{what}: registration failed ({itk_reason(err)})") from err
    return float(method.GetMetricValue())


def register(fixed: sitk.Image, moving: sitk.Image, cfg: RegistrationConfig, what: str,
             fixed_mask: sitk.Image | None = None, affine: bool = True,
             initial: sitk.AffineTransform | None = None,
             report: dict | None = None,
             moving_mask: sitk.Image | None = None) -> sitk.AffineTransform:
    """Rigid (centres of mass aligned first), then affine; fixed -> moving points. From an
    `initial` affine, only the affine stage runs. `report` receives the final metric value.
    The metric samples `fixed_mask` where it maps into `moving_mask`."""
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    if initial is None:
        try:
            rigid = sitk.CenteredTransformInitializer(
                fixed, moving, sitk.Euler3DTransform(),
                sitk.CenteredTransformInitializerFilter.MOMENTS)
        except RuntimeError as err:  # e.g. "Total Mass of the image was zero"
            raise BrainUADError(f"{what}: registration failed: no centre of mass to start "
                                f"from ({itk_reason(err)})") from err
        method = _method(cfg, fixed_mask, cfg.rigid_levels if affine else None, moving_mask)
        method.SetInitialTransform(rigid, inPlace=True)
        metric = _run(method, fixed, moving, what)
        result = sitk.AffineTransform(3)
        result.SetCenter(rigid.GetCenter())
        result.SetMatrix(rigid.GetMatrix())
        result.SetTranslation(rigid.GetTranslation())
    else:
        result, metric = sitk.AffineTransform(initial), float("nan")
    if affine:
        method = _method(cfg, fixed_mask, moving_mask=moving_mask)
        method.SetInitialTransform(result, inPlace=True)
        metric = _run(method, fixed, moving, what)
    if report is not None:
        report["metric"] = metric
    return affine_transform(matrix(result))


def _dilate(mask: sitk.Image, mm: float) -> sitk.Image:
    radius = [max(1, int(round(mm / s))) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(mask, radius)


@functools.lru_cache(maxsize=2)
def working_template(mm: float) -> tuple[sitk.Image, sitk.Image]:
    """The template averaged to about `mm` (whole voxels binned, as `coarse` bins the scan), and
    where the atlas registration's metric samples: the template's brain plus a 5 mm margin."""
    image, brain = template()
    return coarse(image, mm), _dilate(coarse(sitk.Cast(brain, sitk.sitkFloat32), mm) > 0.5, 5)


def rough_brain(image: sitk.Image, mm: float = 5.0) -> sitk.Image:
    """A rough brain mask that needs no atlas: Otsu foreground opened by `mm` (cuts the brain
    from the scalp and the neck along the dark skull), largest component, grown back inside the
    foreground, holes filled. Only a starting point for the registration. On a noisy scan the
    foreground is pitted and the opening leaves nothing: then the scan smoothed by 2 mm is
    thresholded instead (not always: smoothing bridges the thin skull, and the T1 brain masks
    of the registration benchmark lost 0.05-0.1 Dice with it)."""
    radius = [max(1, int(round(mm / s))) for s in image.GetSpacing()]
    foreground = sitk.OtsuThreshold(image, 0, 1)
    opened = sitk.BinaryMorphologicalOpening(foreground, radius)
    if not sitk.GetArrayViewFromImage(opened).any():
        smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), 2.0)
        foreground = sitk.OtsuThreshold(smooth, 0, 1)
        opened = sitk.BinaryMorphologicalOpening(foreground, radius)
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(opened), sortByObjectSize=True) == 1
    return sitk.BinaryFillhole(sitk.BinaryDilate(largest, radius) & foreground)


def coarse(image: sitk.Image, mm: float) -> sitk.Image:
    """The scan averaged down to voxels of about `mm` (whole voxels binned): the registration
    sees nothing finer than the template's grid, and ITK's pyramid of a fine scan took most of
    its time."""
    factors = [max(1, round(mm / s)) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def to_template(image: sitk.Image, cfg: RegistrationConfig,
                what: str) -> tuple[sitk.AffineTransform, dict]:
    """Atlas -> scan transform of a bias-corrected scan, and its plausibility (`quality`). The
    template is skull stripped and a raw scan is not: matched head to brain, the affine stage
    inflated the brain onto the skull (IXI T1 brain-mask Dice 0.70-0.80 on half of the scans).
    So the scan is first stripped roughly (`rough_brain`), and the metric samples the template's
    brain plus a 5 mm margin: Dice 0.95-0.96 on the same scans. Both run on the template and the
    scan averaged to about `cfg.working_mm` (`working_template`, `coarse`). Only the scan's
    field of view (`field_of_view`) counts: a scan whose lowest slices were left empty is not
    shrunk onto the part of the head it shows."""
    fixed, region = working_template(cfg.working_mm)
    image = coarse(image, cfg.working_mm)
    rough_mask = rough_brain(image)
    rough = sitk.Cast(image, sitk.sitkFloat32) * sitk.Cast(rough_mask, sitk.sitkFloat32)
    field = field_of_view(image)
    report: dict = {}
    transform = register(fixed, rough, cfg, f"{what}: to MNI152", fixed_mask=region,
                         report=report, moving_mask=field)
    return transform, quality(rough_mask, transform, report["metric"], field)


def field_of_view(image: sitk.Image) -> sitk.Image:
    """Where a scan holds data: the box around its non-zero voxels. Slices outside the field of
    view are stored as zeros (or not at all); read as "no brain here", they pulled the template
    into the part of the head the scan shows (brain scaled by 0.79)."""
    data = sitk.GetArrayViewFromImage(image) != 0
    box = np.zeros(data.shape, np.uint8)
    found = ndimage.find_objects(data.astype(np.uint8))
    box[found[0] if found else ...] = 1
    out = sitk.GetImageFromArray(box)
    out.CopyInformation(image)
    return out


def quality(rough: sitk.Image, transform: sitk.Transform, metric: float,
            field: sitk.Image) -> dict:
    """How plausible an atlas -> scan registration is: `brain_dice`, the overlap of the
    template's brain with the scan's own rough brain mask (on the atlas grid, inside the scan's
    field of view: a scan that misses part of the head is not also penalised here);
    `coverage`, the part of the template's brain that lands inside the scan's field of view (a
    head cut off lowers it); `scale`, the template brain's size in the scan (cube root of the
    determinant: adult brains differ by about 15 %); `rotation`, the degrees the head is turned
    from the template (heads lie within a few tens of degrees; a mislabelled axis is 90);
    `metric`, the final Mattes mutual information (lower is better). `field`: the scan's field
    of view (`field_of_view`)."""
    _, brain = template()
    template_brain = sitk.GetArrayViewFromImage(brain) > 0
    own = sitk.GetArrayViewFromImage(resample(rough, brain, transform, nearest=True)) > 0
    inside = sitk.GetArrayViewFromImage(resample(field, brain, transform, nearest=True)) > 0
    seen = template_brain & inside
    linear = matrix(transform)[:3, :3]
    u, _, vt = np.linalg.svd(linear)  # the rotation nearest the affine's linear part
    cosine = (np.trace(u @ vt) - 1) / 2
    return {"brain_dice": float(2 * (seen & own).sum() / max(seen.sum() + (own & inside).sum(),
                                                             1)),
            "coverage": float(seen.sum() / template_brain.sum()),
            "scale": float(abs(np.linalg.det(linear)) ** (1 / 3)),
            "rotation": float(np.degrees(np.arccos(np.clip(cosine, -1, 1)))),
            "metric": float(metric)}
