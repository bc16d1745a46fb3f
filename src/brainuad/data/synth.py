"""Synthetic cohort: healthy and lesioned brains from the MNI152 tissue maps shipped in nilearn.

Why synthetic: no healthy FLAIR can be downloaded at run time, and a synthetic lesion has an exact
mask. Each subject is the template's grey/white-matter/CSF probability maps, warped by a small
random affine and a smooth elastic deformation, turned into an image with per-subject tissue
intensities for the chosen contrast (partial-volume mixing), then a bias field, blur and noise
(torchio transforms). Lesioned subjects get 1-15 white-matter blobs of 2-20 mm, most of them
periventricular, with contrasts from subtle (about grey-matter level) to strong. Lesions are drawn
in template space as soft probability maps and warped with the tissue maps; the lesion mask is
where the warped lesion probability exceeds 0.5, so image and mask agree exactly.

The images are skull stripped (zero outside the brain mask), like the atlas-space scans of MSLUB.
Every random draw comes from (seed, subject index), so the same seed gives the same bytes whatever
the number of workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainuad.errors import BrainUADError
from brainuad.io.images import save_volume
from brainuad.io.manifest import Manifest, Subject, write_manifest
from brainuad.preprocessing.atlas import atlas, ventricle_distance
from brainuad.preprocessing.normal_sites import normal_sites
from brainuad.runtime.progress import track

#: Mean tissue intensities per contrast, relative (CSF, GM, WM), and the lesion range
#: (subtle end, strong end). FLAIR: dark CSF, GM brighter than WM, lesions hyperintense; the subtle
#: end sits at grey-matter level so that a plain intensity threshold also flags cortex.
CONTRASTS: dict[str, dict[str, tuple[float, ...]]] = {
    "flair": {"tissue": (0.08, 0.62, 0.45), "lesion": (0.62, 1.0)},
    # a 3D FLAIR's: CSF brighter and half the grey-white contrast, as MSLUB patient07 and
    # patient19 (3D) against the 2D FLAIRs of the longitudinal set, in atlas space
    "flair3d": {"tissue": (0.25, 0.55, 0.50), "lesion": (0.55, 1.0)},
    "t2": {"tissue": (1.0, 0.62, 0.48), "lesion": (0.62, 0.92)},
    "t1": {"tissue": (0.15, 0.52, 0.78), "lesion": (0.50, 0.30)},
}


@dataclass(frozen=True)
class SynthConfig:
    n_healthy: int = 30
    n_lesioned: int = 10
    val_fraction: float = 0.15
    contrast: str = "flair"
    resolution: int = 2  # mm; 1 = the 1 mm MNI grid (197 x 233 x 189), 2 = 99 x 117 x 95
    seed: int = 0
    lesions: tuple[int, int] = (1, 15)
    lesion_diameter_mm: tuple[float, float] = (2.0, 20.0)
    periventricular_fraction: float = 0.7
    max_displacement_mm: float = 4.0
    bias_coefficients: float = 0.3
    noise_std: tuple[float, float] = (0.01, 0.03)
    #: draw the normal bright places of a healthy FLAIR (`normal_variants`): thin caps at the
    #: horn tips, a rim around the aqueduct, the fourth ventricle's floor
    normal_variants: bool = False

    @property
    def modality(self) -> str:
        """The manifest column of its images (a 3D FLAIR's contrast is a FLAIR)."""
        return "flair" if self.contrast.startswith("flair") else self.contrast

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise BrainUADError(f"--contrast {self.contrast!r}: choose one of {list(CONTRASTS)}")
        if self.resolution not in (1, 2):
            raise BrainUADError(f"--size {self.resolution}: choose 1 or 2 (mm)")
        if self.n_healthy < 0 or self.n_lesioned < 0 or self.n_healthy + self.n_lesioned == 0:
            raise BrainUADError("synth needs at least one subject")


def _blob(shape: tuple[int, int, int], centre: np.ndarray, radius_vox: float,
          rng: np.random.Generator) -> tuple[tuple[slice, ...], np.ndarray]:
    """A soft, irregular ellipsoid: its bounding box and the lesion probability inside it."""
    half = int(math.ceil(radius_vox * 1.6)) + 2
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)],
                                indexing="ij"), axis=-1).astype(np.float32) - centre
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    axes = radius_vox * rng.uniform(0.6, 1.4, size=3)
    local = grid @ rotation
    dist = np.sqrt(((local / axes) ** 2).sum(-1))
    # Low-frequency noise on the radius makes a lumpy blob instead of an ellipsoid.
    bumps = ndimage.gaussian_filter(rng.normal(size=dist.shape), sigma=max(radius_vox / 2, 1.0))
    bumps /= bumps.std() + 1e-6
    surface = dist + 0.2 * bumps
    # One-voxel ramp at the boundary: partial volume.
    prob = np.clip(0.5 + (1.0 - surface) * radius_vox, 0.0, 1.0)
    return box, prob.astype(np.float32)


def draw_lesions(cfg: SynthConfig, rng: np.random.Generator,
             maps: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Lesion probability map and per-voxel lesion contrast level (0 subtle .. 1 strong)."""
    shape = maps["wm"].shape
    prob = np.zeros(shape, np.float32)
    level = np.zeros(shape, np.float32)
    wm_core = maps["wm"] > 0.85
    ventricles = ventricle_distance(cfg.resolution)
    count = int(rng.integers(cfg.lesions[0], cfg.lesions[1] + 1))
    lo, hi = np.log(cfg.lesion_diameter_mm[0]), np.log(cfg.lesion_diameter_mm[1])
    for _ in range(count):
        diameter = float(np.exp(rng.uniform(lo, hi)))  # log-uniform: small lesions are common
        radius_vox = diameter / 2 / cfg.resolution
        if rng.random() < cfg.periventricular_fraction:
            zone = wm_core & (ventricles <= diameter / 2 + 4)
        else:
            zone = wm_core & (ventricles > diameter / 2 + 4)
        candidates = np.flatnonzero(zone) if zone.any() else np.flatnonzero(wm_core)
        centre = np.array(np.unravel_index(rng.choice(candidates), shape))
        box, blob = _blob(shape, centre, radius_vox, rng)
        strength = float(rng.uniform(0, 1))
        take = blob > prob[box]
        level[box] = np.where(take, strength, level[box])
        prob[box] = np.maximum(prob[box], blob)
    prob *= maps["brain"]
    return prob, level


def random_warp(maps: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Warp stacked maps `(C, X, Y, Z)` by one random small affine plus a smooth deformation.

    The deformation is a coarse 7 x 7 x 7 grid of random displacements (up to
    `max_displacement_mm`) interpolated to every voxel: the same model as torchio's
    `RandomElasticDeformation`, applied with one trilinear `grid_sample` over all channels at once,
    because ITK's B-spline resampling took 0.4 s per channel and synth must stay under a minute for
    40 subjects.
    """
    import torch
    import torch.nn.functional as F

    shape = maps.shape[1:]
    angles = np.deg2rad(rng.uniform(-5, 5, size=3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rotation = rotation @ r
    linear = rotation * rng.uniform(0.95, 1.05, size=3)
    shift = rng.uniform(-3, 3, size=3) / cfg.resolution
    coarse = rng.uniform(-1, 1, size=(1, 3, 7, 7, 7)) * cfg.max_displacement_mm / cfg.resolution
    coarse[..., [0, -1], :, :] = coarse[..., :, [0, -1], :] = coarse[..., :, :, [0, -1]] = 0
    field = F.interpolate(torch.from_numpy(coarse).float(), size=shape, mode="trilinear",
                          align_corners=True)[0]  # (3, X, Y, Z) voxels
    centre = (np.array(shape) - 1) / 2
    voxels = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape],
                                        indexing="ij"))  # (3, X, Y, Z)
    offset = torch.from_numpy((centre + shift).astype(np.float32))[:, None, None, None]
    moved = torch.einsum("ij,jxyz->ixyz", torch.from_numpy(linear).float(),
                         voxels - torch.from_numpy(centre.astype(np.float32))[:, None, None, None])
    source = moved + offset + field  # (3, X, Y, Z): where each output voxel samples the input
    size = torch.tensor(shape, dtype=torch.float32)[:, None, None, None]
    normalised = 2 * source / (size - 1) - 1
    grid = normalised.flip(0).permute(1, 2, 3, 0)[None]  # (1, X, Y, Z, 3) as (z, y, x)
    out = F.grid_sample(torch.from_numpy(maps)[None], grid, mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out[0].numpy()


#: how thick (mm, from the fluid) the drawn caps, periaqueductal rim and floor are, and how
#: bright: this far from the lesion range's subtle end to its strong end
VARIANT_MM, VARIANT_LEVEL = 1.5, 0.3


def normal_variants(resolution: int) -> np.ndarray:
    """Where a healthy FLAIR is bright anyway (`preprocessing.normal_sites`), drawn thin: the
    sites' tissue within `VARIANT_MM` of the fluid they line (the septum left out: it is thin
    by itself). A soft map in [0, 1] on the MNI grid of `resolution` mm."""
    maps = atlas(resolution)
    sites = normal_sites(resolution)
    near = (ndimage.distance_transform_edt(maps["csf"] < 0.3, sampling=resolution)
            <= max(VARIANT_MM, resolution))  # at least one voxel thick on a 2 mm grid
    drawn = np.isin(sites, (1, 3, 4)) & near
    return ndimage.gaussian_filter(drawn.astype(np.float32), 0.5)


def make_subject(cfg: SynthConfig, index: int, lesioned: bool) -> dict[str, np.ndarray]:
    """Image, brain mask and lesion mask `(X, Y, Z)` of one synthetic subject."""
    import torch
    import torchio as tio

    maps = atlas(cfg.resolution)
    rng = np.random.default_rng([cfg.seed, index])
    torch.manual_seed(int(rng.integers(2**31)))
    if lesioned:
        lesion, level = draw_lesions(cfg, rng, maps)
    else:
        lesion = level = np.zeros_like(maps["wm"])
    variants = (normal_variants(cfg.resolution) if cfg.normal_variants
                else np.zeros_like(maps["wm"]))
    stack = np.stack([maps["csf"], maps["gm"], maps["wm"], maps["brain"], lesion, lesion * level,
                      variants])
    csf, gm, wm, brain, lesion, weighted_level, variants = random_warp(stack, cfg, rng)
    brain_mask = brain > 0.5
    lesion = np.clip(lesion, 0, 1)
    level = weighted_level / np.maximum(lesion, 1e-6)
    label = (lesion > 0.5) & brain_mask

    contrast = CONTRASTS[cfg.contrast]
    tissue = np.array(contrast["tissue"]) * rng.uniform(0.93, 1.07, size=3)
    image = tissue[0] * np.clip(csf, 0, 1) + tissue[1] * np.clip(gm, 0, 1)
    image += tissue[2] * np.clip(wm, 0, 1)
    subtle, strong = contrast["lesion"]
    variants = np.clip(variants, 0, 1)
    image = (1 - variants) * image + variants * (subtle + VARIANT_LEVEL * (strong - subtle))
    lesion_value = subtle + np.clip(level, 0, 1) * (strong - subtle)
    image = (1 - lesion) * image + lesion * lesion_value

    degrade = tio.Compose([
        tio.RandomBiasField(coefficients=cfg.bias_coefficients),
        tio.RandomBlur(std=(0.3 * cfg.resolution, 0.8 * cfg.resolution)),
        tio.RandomNoise(std=cfg.noise_std),
    ])
    image_t = tio.ScalarImage(tensor=torch.from_numpy(image[None].astype(np.float32)),
                              affine=maps["affine"])
    image = degrade(tio.Subject(image=image_t))["image"].numpy()[0]
    gain = 1000.0 * rng.uniform(0.8, 1.2)  # arbitrary scanner units: preprocessing must scale
    image = np.clip(image, 0, None) * gain * brain_mask
    return {"image": image.astype(np.float32), "mask": brain_mask.astype(np.uint8),
            "label": label.astype(np.uint8)}


def _one_thread() -> None:
    """Worker processes share the cores: one torch thread each (never in the main process,
    which goes on to train)."""
    import torch

    torch.set_num_threads(1)


def _write_one(args: tuple[SynthConfig, int, bool, str, Path]) -> Subject:
    cfg, index, lesioned, split, out = args
    name = f"sub-{'p' if lesioned else 'h'}{index:03d}"
    volumes = make_subject(cfg, index, lesioned)
    affine = atlas(cfg.resolution)["affine"]
    folder = out / name
    modality = cfg.modality
    paths = {}
    for key, filename in (("image", f"{modality}.nii.gz"), ("mask", "mask.nii.gz"),
                          ("label", "label.nii.gz")):
        paths[key] = save_volume(folder / filename, volumes[key], affine)
    return Subject(name, split, "patient" if lesioned else "healthy",
                   {modality: paths["image"]}, paths["mask"], paths["label"])


def synth_cohort(out: str | Path, cfg: SynthConfig, workers: int = 1) -> Manifest:
    """Write a cohort under `out` (one folder per subject) and its `manifest.csv`.

    Healthy subjects go to train (and a `val_fraction` of them to val); lesioned ones to test.
    """
    out = Path(out)
    n_val = int(round(cfg.n_healthy * cfg.val_fraction)) if cfg.n_healthy > 1 else 0
    n_val = max(n_val, 1) if cfg.n_healthy >= 4 else n_val
    jobs = [(cfg, i, False, "val" if i >= cfg.n_healthy - n_val else "train", out)
            for i in range(cfg.n_healthy)]
    jobs += [(cfg, cfg.n_healthy + i, True, "test", out) for i in range(cfg.n_lesioned)]
    if workers > 1:
        with get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
            subjects = list(track(pool.imap(_write_one, jobs), "synth", len(jobs)))
    else:
        subjects = [_write_one(job) for job in track(jobs, "synth")]
    return write_manifest(out / "manifest.csv", subjects)
