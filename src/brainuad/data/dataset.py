"""The torch Dataset of a cohort's axial slices (`data/slices.py`) that training reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from brainuad.data.slices import load_subject_slices, plan_slices
from brainuad.errors import BrainUADError
from brainuad.io.files import atomic_path
from brainuad.io.images import load_image
from brainuad.io.manifest import Subject


class SliceDataset(torch.utils.data.Dataset):
    """All axial slices of some subjects as one array `(N, 1, size, size)` float32.

    Volumes are read once. With `cache` (a folder), the slices are written there as a `.npy`
    named by a hash of the inputs (paths, sizes, modification times, slicing) and memory-mapped:
    later runs on the same scans skip NIfTI reading, and a cohort larger than memory trains from
    disk pages; without it they are held in memory.
    """

    def __init__(self, subjects: list[Subject], modality: str, size: int, mode: str = "brain",
                 manifest: Path | None = None, cache: Path | None = None) -> None:
        if not subjects:
            raise BrainUADError(f"{manifest or 'manifest'}: no subjects to make slices from")
        if cache is None:
            stacks = [load_subject_slices(s, modality, size, mode, manifest).images
                      for s in subjects]
            self.images = np.concatenate(stacks)[:, None]
            return
        path = Path(cache) / f"slices-{_cache_key(subjects, modality, size, mode)}.npy"
        if not path.is_file():
            _write_cache(path, subjects, modality, size, mode, manifest)
        self.images = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[index]))


def _cache_key(subjects: list[Subject], modality: str, size: int, mode: str) -> str:
    parts = [CACHE_VERSION, modality, str(size), mode]
    for subject in subjects:
        for path in (subject.images.get(modality), subject.mask):
            stat = Path(path).stat() if path is not None and Path(path).exists() else None
            parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{path}:-")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _write_cache(path: Path, subjects: list[Subject], modality: str, size: int, mode: str,
                 manifest: Path | None) -> None:
    """One subject at a time into a memory-mapped .npy (never the whole cohort in memory),
    written under a temporary name and renamed when complete. The slice counts come from the
    brain masks first, so the file can be laid out before the images are read."""
    for subject in subjects:
        if subject.mask is None:
            load_subject_slices(subject, modality, size, mode, manifest)  # its clear error
    counts = [len(plan_slices(load_image(s.mask), size, mode).indices) for s in subjects]
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                        shape=(sum(counts), 1, size, size))
        start = 0
        for subject, count in zip(subjects, counts, strict=True):
            out[start:start + count, 0] = load_subject_slices(subject, modality, size, mode,
                                                              manifest).images
            start += count
        out.flush()
        del out


#: Bumped when the slicing changes, so old caches are not reused.
CACHE_VERSION = "1"
