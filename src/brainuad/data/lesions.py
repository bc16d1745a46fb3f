"""Synthetic lesions drawn into real preprocessed scans: a labelled validation set made from
scans the model never saw, with exact lesion masks (`brainuad synth --from`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from brainuad.data.synth import SynthConfig, draw_lesions
from brainuad.errors import BrainUADError
from brainuad.io.images import load_binary, load_image, save_volume
from brainuad.io.manifest import Manifest, Subject, read_manifest, write_manifest
from brainuad.preprocessing.atlas import atlas, grid_resolution
from brainuad.preprocessing.intensity import scale_to_unit
from brainuad.runtime.progress import track

#: Lesion loads of `insert_lesions`' copies, in turn: the default (1-15 lesions of 2-20 mm), and
#: a heavy one (10-20 lesions of 6-30 mm, as the demo's patients and MSLUB patient19).
LOADS = ({}, {"lesions": (10, 20), "lesion_diameter_mm": (6.0, 30.0)})
#: Inserted lesions' brightness, relative to the scan's own white matter: from its grey
#: matter's level (subtle; a threshold flags cortex first) to 1.8 times white matter (strong).
STRONG_LESION = 1.8


def insert_lesions(image: np.ndarray, mask: np.ndarray, affine: np.ndarray, seed: int,
                   heavy: bool = False, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Synthetic white-matter lesions drawn into a real preprocessed scan (on nilearn's 1 or
    2 mm MNI grid, scaled to [0, 1]): the generator of `make_subject`, with each lesion's
    brightness drawn between the scan's own grey-matter level and `STRONG_LESION` times its
    white matter, the scan's fine texture kept, and the result scaled again as `preprocess`
    scales (brain percentiles to [0, 1]). Returns the image and its exact lesion mask."""
    resolution = grid_resolution(image.shape, affine)
    if resolution is None:
        raise BrainUADError(f"{where}: lesions are drawn on nilearn's MNI grid (1 or 2 mm), "
                            f"which this scan ({image.shape}) is not on; preprocess it first")
    maps = atlas(resolution)
    cfg = SynthConfig(resolution=resolution, seed=seed, **LOADS[int(heavy)])
    rng = np.random.default_rng([seed, 7])
    probability, level = draw_lesions(cfg, rng, maps)
    brain = mask > 0
    probability *= brain
    wm = float(np.median(image[brain & (maps["wm"] > 0.9)]))
    gm = float(np.median(image[brain & (maps["gm"] > 0.7)]))
    target = wm * (gm / wm + level * (STRONG_LESION - gm / wm))
    texture = image - ndimage.gaussian_filter(image, 1.5 / resolution)
    out = (1 - probability) * image + probability * (target + texture)
    return (scale_to_unit(out, mask, keep_bright=True),
            ((probability > 0.5) & brain).astype(np.uint8))


def has_real_lesions(subject) -> bool:
    """A patient whose lesions are labelled: a validation scan as it is. Every other scan (an
    unlabelled patient, a healthy one) gets lesions drawn in for validation."""
    return subject.label is not None and subject.health == "patient"


def lesioned_copies(manifest_path: str | Path, out: str | Path, split: str = "val",
                    copies: int = 2, seed: int = 0) -> Manifest:
    """A labelled validation set from real scans: `copies` lesioned versions of every subject
    of `split` in a preprocessed manifest without labelled lesions (`has_real_lesions`; loads
    alternating as `LOADS`), each with its exact lesion mask, written under `out` with their
    `manifest.csv` (split `val`, health patient)."""
    manifest = read_manifest(manifest_path)
    chosen = [s for s in manifest.select(split=split) if not has_real_lesions(s)]
    if not chosen:
        raise BrainUADError(f"{manifest.path}: no subjects without labelled lesions in split "
                            f"{split!r}")
    out = Path(out)
    written = []
    for index, subject in enumerate(track(chosen, "synth")):
        modality = next(iter(subject.images))
        volume = load_image(subject.images[modality])
        if subject.mask is None:
            raise BrainUADError(f"{manifest.path}: subject {subject.subject!r} has no brain "
                                "mask; run `brainuad preprocess` first")
        mask = load_binary(subject.mask, volume, "mask").data
        for copy in range(copies):
            image, label = insert_lesions(np.clip(volume.data, 0, None) * mask, mask,
                                          volume.affine, seed * 100_003 + index * 101 + copy,
                                          heavy=copy % 2 == 1, where=str(subject.images[modality]))
            name = f"{subject.subject}-les{copy}"
            paths = {key: save_volume(out / name / f"{key}.nii.gz", data, volume.affine)
                     for key, data in ((modality, image), ("mask", mask), ("label", label))}
            written.append(Subject(name, "val", "patient", {modality: paths[modality]},
                                   paths["mask"], paths["label"],
                                   {"source": subject.subject}))
    return write_manifest(out / "manifest.csv", written)
