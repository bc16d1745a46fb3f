"""Detection: reconstruct slices, residuals, post-processing, NIfTI maps on the scan's own grid.

The same `score_subject` serves the threshold (healthy training subjects, at the end of training)
and `brainuad detect` (any subject), so both see exactly the same filtered, masked residuals.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from brainuad import rundir
from brainuad.config import DetectConfig, RunConfig
from brainuad.errors import BrainUADError
from brainuad.io import load_image, save_volume, write_text
from brainuad.manifest import Subject, read_manifest, shard
from brainuad.models.registry import build_model
from brainuad.postprocess import eroded_mask, median_filter, segment
from brainuad.slices import SubjectSlices, load_subject_slices, to_volume

SAFE_NAME = re.compile(r"^[^/\\]+$")


@dataclass
class Scored:
    score: np.ndarray  # (X, Y, Z) filtered residual x eroded mask, on the scan's grid
    region: np.ndarray  # (X, Y, Z) bool: brain voxels of the scored slices
    scored: np.ndarray  # (X, Y, Z) bool: the region inside the eroded brain mask
    seconds: float  # reconstruction + post-processing (without the threshold)
    n_slices: int


@torch.inference_mode()
def reconstruct(model: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, S, S) slices in [0, 1] -> reconstructions (N, S, S)."""
    model.eval().to(memory_format=torch.channels_last)  # oneDNN's fast layout for convolutions
    out = np.empty_like(images)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start:start + batch_size])[:, None]
        batch = batch.contiguous(memory_format=torch.channels_last)
        out[start:start + batch_size] = model.reconstruct(batch)[:, 0].numpy()
    return out


def score_subject(model: nn.Module, data: SubjectSlices, cfg: DetectConfig) -> Scored:
    """Residual |x - x_hat| per slice, 5x5x5 median over the stack, back on the volume grid,
    times the eroded brain mask."""
    start = time.perf_counter()
    residual = data.images - reconstruct(model, data.images, cfg.batch_size)
    if cfg.residual == "positive":
        residual = np.maximum(residual, 0)
    elif cfg.residual == "abs":
        residual = np.abs(residual)
    else:
        raise BrainUADError(f"detect.residual {cfg.residual!r}: choose abs or positive")
    residual *= data.masks  # the network's output outside the brain is not evidence of anything
    # Only brain voxels are ever scored; one voxel more covers the interpolation back to the grid.
    near_brain = ndimage.binary_dilation(data.masks > 0)
    filtered = median_filter(residual, cfg.median_size, where=near_brain)
    volume = to_volume(filtered, data.geometry)
    brain = data.mask.data > 0
    region = to_volume(np.ones_like(filtered), data.geometry) > 0.5
    scored = eroded_mask(brain, data.volume.spacing, cfg.erosion_mm) & region
    return Scored((volume * scored).astype(np.float32), brain & region, scored,
                  time.perf_counter() - start, len(data.geometry.indices))


def healthy_threshold(model: nn.Module, subjects: list[Subject], cfg: RunConfig,
                      progress: Callable | None = None) -> dict:
    """The `percentile` of filtered, masked residuals over healthy subjects' eroded brains."""
    progress = progress or (lambda iterable, total: iterable)
    values = []
    for subject in progress(subjects, total=len(subjects)):
        data = load_subject_slices(subject, cfg.train.modality, cfg.model.image_size,
                                   cfg.detect.slices)
        result = score_subject(model, data, cfg.detect)
        values.append(result.score[result.scored])
    pooled = np.concatenate(values)
    return {
        "threshold": float(np.percentile(pooled, cfg.detect.percentile)),
        "percentile": cfg.detect.percentile,
        "slices": cfg.detect.slices,
        "subjects": [s.subject for s in subjects],
        "voxels": int(pooled.size),
    }


def load_detector(run: Path) -> tuple[RunConfig, nn.Module, float]:
    """Rebuild the model of a run directory from its config and plain weights (no pickle)."""
    cfg = rundir.read_config(run)
    model = build_model(cfg.model)
    state = rundir.load_weights(run)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BrainUADError(f"{run / rundir.MODEL}: weights do not fit the model of "
                            f"{run / rundir.CONFIG} ({str(err).splitlines()[0]})") from err
    model.eval()
    return cfg, model, rundir.read_threshold(run)


def _on_native_grid(maps: dict[str, np.ndarray], affine: np.ndarray,
                    subject: Subject) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A registered subject's maps carried back onto its raw scan's grid (masks by nearest
    neighbour, the score linearly), where its lesion label and its user's viewer are."""
    from brainuad.register import read_transform, to_native, to_sitk

    native = load_image(subject.native)
    grid, transform = to_sitk(native.data, native.affine), read_transform(subject.transform)
    out = {name: to_native(np.asarray(value, np.float32), affine, grid, transform,
                           nearest=name != "score") for name, value in maps.items()}
    return out, native.affine


def detect_manifest(run: str | Path, manifest_path: str | Path, out: str | Path | None = None,
                    slices: str | None = None, split: str | None = None,
                    progress: Callable | None = None, shard_spec: str | None = None) -> Path:
    """Write `out/<subject>/{score,mask,region}.nii.gz` for every (selected) subject, on the
    scan's own grid and affine, plus `out/detect.json` with the timings. Subjects whose outputs
    already exist are skipped (outputs are written atomically, mask last)."""
    run = Path(run)
    cfg, model, threshold = load_detector(run)
    if slices is not None:
        cfg.detect.slices = slices
    manifest = read_manifest(manifest_path)
    subjects = manifest.select(split=split) if split else manifest.subjects
    if not subjects:
        raise BrainUADError(f"{manifest.path}: no subjects with split {split!r}")
    subjects = shard(subjects, shard_spec, manifest.path)
    out = Path(out) if out is not None else run / "pred"
    progress = progress or (lambda iterable, total: iterable)
    timings = {}
    for subject in progress(subjects, total=len(subjects)):
        if not SAFE_NAME.match(subject.subject) or subject.subject in (".", ".."):
            raise BrainUADError(f"{manifest.path}: subject name {subject.subject!r} cannot be "
                                "used as a folder name")
        folder = out / subject.subject
        if (folder / "mask.nii.gz").exists():
            continue
        data = load_subject_slices(subject, cfg.train.modality, cfg.model.image_size,
                                   cfg.detect.slices, manifest.path)
        scored = score_subject(model, data, cfg.detect)
        start = time.perf_counter()
        mask = segment(scored.score, threshold, cfg.detect.min_component)
        seconds = scored.seconds + time.perf_counter() - start
        maps, affine = {"score": scored.score, "region": scored.region, "mask": mask}, None
        if subject.transform is not None and subject.native is not None:
            maps, affine = _on_native_grid(maps, data.volume.affine, subject)
        affine = data.volume.affine if affine is None else affine
        save_volume(folder / "score.nii.gz", maps["score"], affine, np.float32)
        save_volume(folder / "region.nii.gz", maps["region"], affine, np.uint8)
        save_volume(folder / "mask.nii.gz", maps["mask"], affine, np.uint8)  # last: done
        timings[subject.subject] = {"seconds": seconds, "slices": scored.n_slices}
    summary_path = out / "detect.json"
    previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary = {
        "run": str(run.resolve()), "model": cfg.model.name, "z": cfg.model.z_description,
        "modality": cfg.train.modality,
        "threshold": threshold,
        "slices": cfg.detect.slices, "subjects": {**previous.get("subjects", {}), **timings},
    }
    write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    return out
