"""Volume <-> 2D axial slices, which training and detection share (the torch Dataset of
them: `data/dataset.py`).

A volume is first reoriented to RAS (nibabel's closest canonical orientation: a pure axis
permutation/flip, so no interpolation), which makes the third axis the axial one whatever the scan's
storage order. Each chosen axial slice `(X, Y)` is centred on a square canvas: padded when it fits
in `size`, or padded to a square and then resampled to `size` when it does not. `SliceGeometry`
records all of it so `to_volume` maps per-slice maps back onto the volume's own grid; the round trip
is exact whenever no resampling was needed (`size` at least the slice's largest side).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from brainuad.errors import BrainUADError
from brainuad.io.images import Volume, load_binary, load_image
from brainuad.io.manifest import Subject

SLICE_MODES = ("brain", "paper")
#: The paper took 20 consecutive axial slices around the middle of the brain.
PAPER_SLICES = 20


@dataclass(frozen=True)
class SliceGeometry:
    """Everything needed to go from a volume to slices and back."""

    shape: tuple[int, int, int]  # the volume's own shape
    ornt: np.ndarray  # nibabel orientation taking the volume's axes to RAS
    indices: tuple[int, ...]  # chosen axial slices, in RAS order (inferior -> superior)
    size: int  # side of the square slices the network sees

    @property
    def ras_shape(self) -> tuple[int, int, int]:
        axes = self.ornt[:, 0].astype(int)
        shape = [0, 0, 0]
        for src, dst in enumerate(axes):
            shape[dst] = self.shape[src]
        return tuple(shape)  # type: ignore[return-value]

    @property
    def side(self) -> int:
        """Square side before resampling: the slice's largest side, or `size` if larger."""
        return max(self.ras_shape[0], self.ras_shape[1], self.size)

    @property
    def resampled(self) -> bool:
        return self.side != self.size


def to_ras(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    return nib.orientations.apply_orientation(data, ornt)


def from_ras(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return nib.orientations.apply_orientation(data, back)


def plan_slices(mask: Volume, size: int, mode: str = "brain",
                n_paper: int = PAPER_SLICES) -> SliceGeometry:
    """Choose axial slices from the brain mask: every slice holding brain, or the paper's block of
    `n_paper` consecutive slices centred on the middle of the brain's axial extent."""
    if mode not in SLICE_MODES:
        raise BrainUADError(f"slices {mode!r}: choose one of {SLICE_MODES}")
    if size < 8:
        raise BrainUADError(f"image size {size}: must be at least 8 pixels")
    ornt = nib.orientations.io_orientation(mask.affine)
    ras = to_ras(mask.data, ornt)
    with_brain = np.flatnonzero(ras.reshape(-1, ras.shape[2]).any(axis=0))
    if len(with_brain) == 0:
        raise BrainUADError(f"{mask.path}: brain mask is empty")
    if mode == "brain":
        indices = with_brain
    else:
        middle = (int(with_brain[0]) + int(with_brain[-1])) // 2
        start = int(np.clip(middle - n_paper // 2, 0, max(ras.shape[2] - n_paper, 0)))
        indices = np.arange(start, min(start + n_paper, ras.shape[2]))
    return SliceGeometry(tuple(mask.shape), ornt, tuple(int(i) for i in indices), size)


def _offsets(geom: SliceGeometry) -> tuple[int, int]:
    nx, ny, _ = geom.ras_shape
    return (geom.side - nx) // 2, (geom.side - ny) // 2


def to_slices(data: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """Volume `(X, Y, Z)` on its own grid -> slices `(N, size, size)` float32."""
    if tuple(data.shape) != geom.shape:
        raise ValueError(f"volume shape {data.shape} is not the planned {geom.shape}")
    ras = to_ras(np.asarray(data, dtype=np.float32), geom.ornt)
    nx, ny, _ = ras.shape
    ox, oy = _offsets(geom)
    canvas = np.zeros((len(geom.indices), geom.side, geom.side), np.float32)
    canvas[:, ox:ox + nx, oy:oy + ny] = np.moveaxis(ras[:, :, list(geom.indices)], 2, 0)
    if geom.resampled:
        import torch
        import torch.nn.functional as F  # noqa: N812 (torch's own name)

        tensor = torch.from_numpy(canvas)[:, None]
        canvas = F.interpolate(tensor, size=(geom.size, geom.size), mode="bilinear",
                               antialias=True, align_corners=False)[:, 0].numpy()
    return canvas


def to_volume(slices: np.ndarray, geom: SliceGeometry, fill: float = 0.0) -> np.ndarray:
    """Slices `(N, size, size)` -> volume `(X, Y, Z)` on the original grid; unsliced voxels get
    `fill`. Exact inverse of `to_slices` when no resampling was needed."""
    slices = np.asarray(slices, dtype=np.float32)
    if slices.shape != (len(geom.indices), geom.size, geom.size):
        raise ValueError(f"slices of shape {slices.shape} do not match the geometry "
                         f"({len(geom.indices)}, {geom.size}, {geom.size})")
    if geom.resampled:
        import torch
        import torch.nn.functional as F  # noqa: N812 (torch's own name)

        tensor = torch.from_numpy(slices)[:, None]
        slices = F.interpolate(tensor, size=(geom.side, geom.side), mode="bilinear",
                               align_corners=False)[:, 0].numpy()
    nx, ny, nz = geom.ras_shape
    ox, oy = _offsets(geom)
    ras = np.full((nx, ny, nz), fill, np.float32)
    ras[:, :, list(geom.indices)] = np.moveaxis(slices[:, ox:ox + nx, oy:oy + ny], 0, 2)
    return from_ras(ras, geom.ornt)


def check_unit_range(volume: Volume, mask: np.ndarray) -> None:
    """Refuse images that were not scaled to [0, 1] (small overshoot from denoising is fine)."""
    inside = volume.data[mask > 0]
    high = float(np.percentile(inside, 99)) if inside.size else 0.0
    if high > 1.5 or float(inside.min(initial=0)) < -0.5:
        raise BrainUADError(
            f"{volume.path}: intensities are not scaled to [0, 1] (99th percentile in the brain "
            f"is {high:.4g}); run `brainuad preprocess` on this manifest first"
        )


@dataclass
class SubjectSlices:
    """One scan's slices, brain-mask slices and the way back to its volume."""

    volume: Volume
    mask: Volume
    geometry: SliceGeometry
    images: np.ndarray  # (N, size, size) in [0, 1], zero outside the brain
    masks: np.ndarray  # (N, size, size) 0/1


def load_preprocessed(subject: Subject, modality: str,
                      manifest: Path | None = None) -> tuple[Volume, Volume]:
    """A preprocessed subject's image (in [0, 1]) and its non-empty brain mask, checked."""
    volume = load_image(subject.image(modality, manifest))
    if subject.mask is None:
        where = f"{manifest}: " if manifest else ""
        raise BrainUADError(f"{where}subject {subject.subject!r} has no brain mask; "
                            "run `brainuad preprocess` first")
    mask = load_binary(subject.mask, volume, "mask")
    if not mask.data.any():
        raise BrainUADError(f"{subject.mask}: brain mask is empty")
    check_unit_range(volume, mask.data)
    return volume, mask


def load_subject_slices(subject: Subject, modality: str, size: int, mode: str = "brain",
                        manifest: Path | None = None) -> SubjectSlices:
    """Read a preprocessed subject (image in [0, 1] and brain mask) and cut its slices."""
    return cut_slices(*load_preprocessed(subject, modality, manifest), size, mode)


def cut_slices(volume: Volume, mask: Volume, size: int, mode: str = "brain") -> SubjectSlices:
    """A preprocessed volume and its brain mask (in memory) as the slices a network sees."""
    check_unit_range(volume, mask.data)
    geom = plan_slices(mask, size, mode)
    images = to_slices(np.clip(volume.data, 0, 1) * mask.data, geom)
    masks = (to_slices(mask.data, geom) > 0.5).astype(np.float32)
    return SubjectSlices(volume, mask, geom, np.clip(images, 0, 1), masks)


def slice_region(geom: SliceGeometry) -> np.ndarray:
    """(X, Y, Z) bool: the voxels of the chosen axial slices, on the volume's own grid."""
    ras = np.zeros(geom.ras_shape, bool)
    ras[:, :, list(geom.indices)] = True
    return from_ras(ras, geom.ornt)
