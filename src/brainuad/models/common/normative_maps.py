"""A voxel-wise normative intensity model in atlas space: the mean and spread of each voxel's
intensity over the training scans. A scan's anomaly score is then how many spreads a voxel lies
above its mean (a z-score): bright where that place is not bright in the training scans, which
a global intensity threshold cannot tell from the cortex, the septum or the choroid plexus that
are bright in every FLAIR.

It is fitted at the end of training from the preprocessed training scans (sums and sums of
squares per voxel: fixed memory, and the sums of several processes add up), on nilearn's 2 mm
MNI grid; stored in the model folder as `normative.pt` (plain tensors). Measured on the MSLUB
validation scans (real scans with inserted lesions), maps kept at 2 mm and resampled to the 1 mm
scans find lesions as well as 1 mm maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainuad.data.slices import load_preprocessed
from brainuad.errors import BrainUADError
from brainuad.io.files import atomic_path
from brainuad.io.weights import safe_torch_load
from brainuad.preprocessing.atlas import atlas, regrid
from brainuad.runtime.progress import track

FILE = "normative.pt"
#: Smoothing (mm) of the fitted maps: the mean a little (registration is affine, so edges of a
#: few training scans do not line up), the spread more (it is estimated from few scans).
MEAN_SMOOTHING_MM, SPREAD_SMOOTHING_MM = 1.0, 2.0
GRID_MM = 2


@functools.lru_cache(maxsize=1)
def grid() -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the maps: nilearn's MNI152 grid at 2 mm."""
    maps = atlas(GRID_MM)
    return maps["wm"].shape, maps["affine"]


def match(image: np.ndarray, mean: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`image` mapped linearly onto the intensities of the normative `mean`: the line through
    the medians of its darker and of its brighter half (split by the mean map). Percentile
    scaling puts a scan with a heavy lesion load (its 99.5th percentile in the lesions) darker
    than the training scans, which would shift every z-score; lesions are too few to move these
    medians (chosen on the MSLUB validation scans: docs/results/mslub_validation.md)."""
    split = np.median(mean[where])
    dark, bright = where & (mean < split), where & (mean >= split)
    if not dark.any() or not bright.any():
        return image
    x = np.array([np.median(image[dark]), np.median(image[bright])])
    m = np.array([np.median(mean[dark]), np.median(mean[bright])])
    if x[1] - x[0] <= 1e-6:
        return image
    slope = (m[1] - m[0]) / (x[1] - x[0])
    return (image - x[0]) * slope + m[0]


class Accumulator:
    """Per-voxel count, sum and sum of squares of brain intensities on the 2 mm grid."""

    def __init__(self) -> None:
        shape, self.affine = grid()
        self.sums = np.zeros((3, *shape), np.float64)  # count, sum, sum of squares

    def add(self, image: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> None:
        shape = self.sums.shape[1:]
        inside = regrid(mask.astype(np.float32), affine, shape, self.affine) > 0.5
        values = regrid(image * (mask > 0), affine, shape, self.affine)
        self.sums[0] += inside
        self.sums[1] += np.where(inside, values, 0)
        self.sums[2] += np.where(inside, values * values, 0)

    def merge(self, other: Accumulator) -> None:
        self.sums += other.sums

    def finish(self) -> Normative:
        count, total, squares = self.sums
        if count.max() < 2:
            raise BrainUADError("a normative model needs at least two training scans")
        seen = count >= 2
        mean = np.where(seen, total / np.maximum(count, 1), 0)
        var = np.where(seen, squares / np.maximum(count, 1) - mean**2, 0)
        sd = np.sqrt(np.clip(var, 0, None) * count / np.maximum(count - 1, 1))
        mean = ndimage.gaussian_filter(mean, MEAN_SMOOTHING_MM / GRID_MM)
        sd = ndimage.gaussian_filter(sd, SPREAD_SMOOTHING_MM / GRID_MM)
        return Normative(mean.astype(np.float32), sd.astype(np.float32), self.affine,
                         seen)


@dataclass
class Normative:
    mean: np.ndarray  # (X, Y, Z) on `affine`, the 2 mm grid
    sd: np.ndarray
    affine: np.ndarray
    seen: np.ndarray  # voxels inside at least two training brains

    def zscore(self, image: np.ndarray, brain: np.ndarray, affine: np.ndarray,
               floor: float) -> np.ndarray:
        """(image - mean) / max(sd, floor) on the image's grid, after the image's intensities
        are matched to the maps (`match`); 0 where the maps have no data."""
        shape = image.shape
        mean = regrid(self.mean, self.affine, shape, affine)
        sd = regrid(self.sd, self.affine, shape, affine)
        seen = regrid(self.seen.astype(np.float32), self.affine, shape, affine) > 0.5
        image = match(image, mean, seen & (brain > 0))
        return np.where(seen, (image - mean) / np.maximum(sd, floor), 0).astype(np.float32)

    def save(self, folder: Path) -> None:
        import torch

        state = {"mean": torch.from_numpy(self.mean).half(), "sd": torch.from_numpy(self.sd).half(),
                 "affine": torch.from_numpy(self.affine), "seen": torch.from_numpy(self.seen)}
        with atomic_path(folder / FILE) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, folder: Path) -> Normative | None:
        """The maps of a model folder (None: it has none)."""
        if not (folder / FILE).is_file():
            return None
        state = safe_torch_load(folder / FILE)
        try:
            return cls(state["mean"].float().numpy(), state["sd"].float().numpy(),
                       state["affine"].numpy().astype(np.float64), state["seen"].numpy())
        except (KeyError, TypeError, AttributeError) as err:
            raise BrainUADError(f"{folder / FILE}: not a normative model ({err})") from err


def accumulate(subjects: list, modality: str, manifest: Path | None = None,
               shard: tuple[int, int] = (0, 1)) -> Accumulator:
    """The sums over the preprocessed `subjects` (every world-th from the rank-th with `shard`;
    the accumulators of all shards merge into the whole)."""
    accumulator = Accumulator()
    mine = subjects[shard[0]::shard[1]]
    for subject in track(mine, "normative maps"):
        volume, mask = load_preprocessed(subject, modality, manifest)
        accumulator.add(np.clip(volume.data, 0, 1) * mask.data, mask.data, volume.affine)
    return accumulator
