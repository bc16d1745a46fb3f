"""Detection: reconstruct slices, residuals, post-processing, NIfTI maps on the scan's own grid.

The same `score_subject` serves the threshold (healthy training subjects, at the end of training)
and `brainuad detect` (any subject), so both see exactly the same filtered, masked residuals.
"""

from __future__ import annotations

import json
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
from brainuad.errors import BrainUADError, attempt, raise_failures
from brainuad.io import load_image, remove_partials, save_volume, write_text
from brainuad.manifest import Subject, read_manifest, shard
from brainuad.models.blocks import fuse_batchnorm
from brainuad.models.registry import build_model
from brainuad.postprocess import eroded_mask, median_filter, residual_map, segment
from brainuad.slices import SubjectSlices, load_subject_slices, to_volume


@dataclass
class Scored:
    score: np.ndarray  # (X, Y, Z) filtered residual x eroded mask, on the scan's grid
    region: np.ndarray  # (X, Y, Z) bool: brain voxels of the scored slices
    scored: np.ndarray  # (X, Y, Z) bool: the region inside the eroded brain mask
    seconds: float  # reconstruction + post-processing (without the threshold)
    n_slices: int


def device_for(accelerator: str) -> torch.device:
    """`cpu`, `gpu` (the first CUDA device; an error where there is none) or `auto` (a GPU
    where torch sees one, else the CPU)."""
    if accelerator not in ("auto", "cpu", "gpu"):
        raise BrainUADError(f"accelerator {accelerator!r}: choose auto, cpu or gpu")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise BrainUADError("accelerator gpu: torch sees no CUDA GPU here (use cpu or auto)")
    return torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def reconstruct(model: nn.Module, images: np.ndarray, batch_size: int,
                precision: str = "32") -> np.ndarray:
    """(N, S, S) slices in [0, 1] -> reconstructions (N, S, S), on the model's device."""
    device = next(model.parameters(), torch.empty(0)).device
    # oneDNN's fast layout for convolutions; converted outside inference mode so the weights stay
    # ordinary tensors (AnoGAN's latent search differentiates through them)
    model.eval().to(memory_format=torch.channels_last)
    out = np.empty_like(images)
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                enabled=precision == "bf16"):
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
            batch = batch.contiguous(memory_format=torch.channels_last)
            reconstruction = model.reconstruct(batch)[:, 0].float().cpu()
            out[start:start + batch_size] = reconstruction.numpy()
    return out


class Stopwatch:
    """Seconds per named stage, in order: `lap(name)` closes the stage that just ran."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self._last
        self._last = now


def score_subject(model: nn.Module, data: SubjectSlices, cfg: DetectConfig,
                  clock: Stopwatch | None = None) -> Scored:
    """Residual per slice (`postprocess.residual_map`), 5x5x5 median over the stack, back on the
    volume grid, times the eroded brain mask."""
    clock = clock or Stopwatch()
    start = time.perf_counter()
    floor = None
    if cfg.residual == "hyperintense":  # the input's quantile over its whole brain
        floor = float(np.quantile(data.volume.data[data.mask.data > 0], cfg.hyper_quantile))
    reconstruction = reconstruct(model, data.images, cfg.batch_size, cfg.resolved_precision)
    clock.lap("reconstruct")
    residual = residual_map(data.images, reconstruction, data.masks, cfg.residual, floor)
    # Only brain voxels are ever scored; one voxel more covers the interpolation back to the grid.
    near_brain = ndimage.binary_dilation(data.masks > 0)
    filtered = median_filter(residual, cfg.median_size, where=near_brain)
    clock.lap("residual + median")
    volume = to_volume(filtered, data.geometry)
    brain = data.mask.data > 0
    region = to_volume(np.ones_like(filtered), data.geometry) > 0.5
    scored = eroded_mask(brain, data.volume.spacing, cfg.erosion_mm) & region
    clock.lap("to volume + eroded mask")
    return Scored((volume * scored).astype(np.float32), brain & region, scored,
                  time.perf_counter() - start, len(data.geometry.indices))


#: Percentiles 0.0, 0.1, ..., 100.0 of the training residuals are kept, so any percentile or
#: false-positive rate on that grid (98 %, 1 %, 5 %, 10 % ...) is exact without rescoring.
PERCENTILES = np.arange(1001) / 10


@dataclass
class Quantiles:
    """Distribution of the filtered, masked residuals on the training subjects, one scoring."""

    values: np.ndarray  # at PERCENTILES

    def at_percentile(self, percentile: float) -> float:
        return float(np.interp(percentile, PERCENTILES, self.values))

    def at_fpr(self, fpr: float) -> float:
        """The threshold that flags a fraction `fpr` of the training subjects' scored voxels."""
        if not 0 < fpr < 1:
            raise BrainUADError(f"false-positive rate {fpr}: must be in (0, 1), e.g. 0.05")
        return self.at_percentile(100 * (1 - fpr))


def training_quantiles(model: nn.Module, subjects: list[Subject], cfg: RunConfig,
                       detect: DetectConfig, progress: Callable | None = None) -> dict:
    """Residual quantiles pooled over the training subjects' eroded brains, scored as `detect`
    (on `detect.threshold_subjects` of them, evenly spread, when that is set)."""
    progress = progress or (lambda iterable, total: iterable)
    keep = detect.threshold_subjects
    if 0 < keep < len(subjects):
        subjects = [subjects[i] for i in np.linspace(0, len(subjects) - 1, keep).round()
                    .astype(int)]
    values = []
    for subject in progress(subjects, total=len(subjects)):
        data = load_subject_slices(subject, cfg.train.modality, cfg.model.image_size,
                                   detect.slices)
        result = score_subject(model, data, detect)
        values.append(result.score[result.scored])
    pooled = np.concatenate(values)
    return {"quantiles": np.percentile(pooled, PERCENTILES).tolist(), "voxels": int(pooled.size),
            "subjects": [s.subject for s in subjects]}


def healthy_threshold(model: nn.Module, subjects: list[Subject], cfg: RunConfig,
                      progress: Callable | None = None) -> dict:
    """threshold.json of a new run: the `percentile` of the training residuals, and their
    quantiles under the run's own scoring."""
    entry = training_quantiles(model, subjects, cfg, cfg.detect, progress)
    return {
        "threshold": Quantiles(np.array(entry["quantiles"])).at_percentile(
            cfg.detect.percentile),
        "percentile": cfg.detect.percentile, "slices": cfg.detect.slices,
        "subjects": entry["subjects"], "voxels": entry["voxels"],
        "scorings": {cfg.detect.scoring_key: entry},
    }


def run_quantiles(run: Path, cfg: RunConfig, model: nn.Module, detect: DetectConfig,
                  progress: Callable | None = None) -> Quantiles:
    """The run's training quantiles for the scoring `detect`; a scoring the run has not seen
    (other slices or residual) is computed once on its training subjects and kept."""
    info = rundir.read_threshold_info(run)
    entry = info.get("scorings", {}).get(detect.scoring_key)
    if entry is None:
        subjects = rundir.training_subjects(run, cfg.train.health,
                                            f"a threshold for {detect.scoring_key}")
        entry = training_quantiles(model, subjects, cfg, detect, progress)
        info.setdefault("scorings", {})[detect.scoring_key] = entry
        rundir.write_threshold(run, info)
    return Quantiles(np.array(entry["quantiles"], dtype=float))


def load_detector(run: Path) -> tuple[RunConfig, nn.Module]:
    """Rebuild the model of a run directory from its config and plain weights (no pickle)."""
    cfg = rundir.read_config(run)
    model = build_model(cfg.model)
    state = rundir.load_weights(run)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BrainUADError(f"{run / rundir.MODEL}: weights do not fit the model of "
                            f"{run / rundir.CONFIG} ({str(err).splitlines()[0]})") from err
    return cfg, fuse_batchnorm(model)  # eval-mode batch norm folded into the convolutions


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


#: False-positive rates on the training scans at which `evaluate` also reports Dice.
REPORTED_FPRS = (0.01, 0.05, 0.10)
TIMING = "timing.json"  # a subject's detection timings, beside its maps


def read_timing(folder: Path) -> dict | None:
    """The timings `detect` wrote in a subject's output folder (None: none there)."""
    path = folder / TIMING
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise BrainUADError(f"{path}: damaged ({err})") from err


def detect_manifest(run: str | Path, manifest_path: str | Path, out: str | Path | None = None,
                    slices: str | None = None, split: str | None = None,
                    progress: Callable | None = None, shard_spec: str | None = None,
                    residual: str | None = None, fpr: float | None = None,
                    precision: str | None = None, keep_going: bool = False,
                    accelerator: str = "auto") -> Path:
    """Write `out/<subject>/{score,mask,region}.nii.gz` for every (selected) subject, on the
    scan's own grid and affine, with its stage timings in `out/<subject>/timing.json`, plus
    `out/detect.json` with the settings and thresholds (written first, the same for every shard
    and every rerun, so shards sharing `out` and killed runs lose nothing).

    The mask's threshold is the run's percentile (98th) of the training residuals, or the one
    flagging a fraction `fpr` of them; `slices`/`residual` other than the run's are scored on the
    training subjects first, so the threshold always matches the scoring. Subjects whose outputs
    already exist are skipped (outputs are written atomically, mask last). With `keep_going`,
    a subject that fails does not stop the others; `SubjectsFailed` names it at the end.
    The networks run on `accelerator` (`device_for`); everything else on the CPU.
    """
    run = Path(run)
    device = device_for(accelerator)
    cfg, model = load_detector(run)
    model.to(device)
    cfg.detect.slices = slices or cfg.detect.slices
    cfg.detect.residual = residual or cfg.detect.residual
    cfg.detect.precision = precision or cfg.detect.precision
    cfg.detect.__post_init__()
    manifest = read_manifest(manifest_path)
    subjects = manifest.select(split=split) if split else manifest.subjects
    if not subjects:
        raise BrainUADError(f"{manifest.path}: no subjects with split {split!r}")
    subjects = shard(subjects, shard_spec, manifest.path)
    out = Path(out) if out is not None else run / "pred"
    summary_path = out / "detect.json"
    try:
        previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    except ValueError as err:
        raise BrainUADError(f"{summary_path}: damaged ({err}); remove it or give another "
                            "--out") from err
    quantiles = run_quantiles(run, cfg, model, cfg.detect)
    threshold = (quantiles.at_fpr(fpr) if fpr is not None
                 else quantiles.at_percentile(cfg.detect.percentile))
    settings = {"run": str(run.resolve()), "scoring": cfg.detect.scoring_key,
                "threshold": threshold}
    if previous and any(previous.get(k) != v for k, v in settings.items()):
        raise BrainUADError(f"{out}: holds detections of another run or other settings "
                            f"({previous.get('scoring')}, threshold {previous.get('threshold')});"
                            " give another --out")
    summary = {
        **settings, "model": cfg.model.name, "z": cfg.model.z_description,
        "modality": cfg.train.modality, "slices": cfg.detect.slices,
        "residual": cfg.detect.residual, "min_component": cfg.detect.min_component,
        "rule": f"fpr {fpr}" if fpr is not None else f"percentile {cfg.detect.percentile}",
        "fpr_thresholds": {str(f): quantiles.at_fpr(f) for f in REPORTED_FPRS},
    }
    if not previous:
        write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    progress = progress or (lambda iterable, total: iterable)
    results = [attempt(keep_going, _detect_subject, subject, out / subject.subject, model, cfg,
                       threshold, manifest.path)
               for subject in progress(subjects, total=len(subjects))]
    raise_failures([s.subject for s in subjects], results, "detect")
    return out


def _detect_subject(subject: Subject, folder: Path, model: nn.Module, cfg: RunConfig,
                    threshold: float, manifest: Path) -> None:
    """One subject's score, region and mask NIfTIs in `folder` (nothing if already there), then
    its timings."""
    if (folder / "mask.nii.gz").exists():
        return
    remove_partials(folder)  # of a run that was killed while writing this subject
    clock = Stopwatch()
    data = load_subject_slices(subject, cfg.train.modality, cfg.model.image_size,
                               cfg.detect.slices, manifest)
    clock.lap("read + slice")
    scored = score_subject(model, data, cfg.detect, clock)
    start = time.perf_counter()
    mask = segment(scored.score, threshold, cfg.detect.min_component)
    seconds = scored.seconds + time.perf_counter() - start
    clock.lap("threshold + components")
    maps, affine = {"score": scored.score, "region": scored.region, "mask": mask}, None
    if subject.transform is not None and subject.native is not None:
        maps, affine = _on_native_grid(maps, data.volume.affine, subject)
        clock.lap("to raw grid")
    affine = data.volume.affine if affine is None else affine
    save_volume(folder / "score.nii.gz", maps["score"], affine, np.float32)
    save_volume(folder / "region.nii.gz", maps["region"], affine, np.uint8)
    save_volume(folder / "mask.nii.gz", maps["mask"], affine, np.uint8)  # last: done
    clock.lap("write")
    timing = {"seconds": seconds, "slices": scored.n_slices, "stages": clock.stages}
    write_text(folder / TIMING, json.dumps(timing, indent=2) + "\n")
