"""The one object that turns scans into anomaly scores: a model folder (a run directory or a
bundled model) loaded for detection, shared by `train`'s calibration, `use-epoch`, `calibrate`,
`detect` and `segment`.

A model folder is complete and read-only here: config, weights and thresholds for every
precision detection may use. Nothing in this module writes into it or needs the training scans.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from brainuad import rundir, thresholds
from brainuad.config import DetectConfig, RunConfig
from brainuad.errors import BrainUADError
from brainuad.io import load_binary
from brainuad.models.blocks import fuse_batchnorm
from brainuad.models.registry import build_model
from brainuad.normative import FILE, Normative
from brainuad.postprocess import (
    eroded_mask,
    median_filter,
    residual_map,
    segment,
    shape_residual,
)
from brainuad.slices import SubjectSlices, load_subject_slices, to_volume

#: Precisions detection may run in; a network's thresholds are calibrated for each.
PRECISIONS = ("32", "bf16")


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


class Detector:
    """A model ready to score scans: its config, its network (batch norm folded, on `device`),
    its normative maps (if fitted) and its thresholds (`threshold.json`; None while a run is
    being calibrated)."""

    def __init__(self, cfg: RunConfig, model: nn.Module, info: dict | None = None,
                 folder: Path | None = None, device: torch.device | None = None,
                 normative: Normative | None = None) -> None:
        self.cfg, self.info, self.folder, self.normative = cfg, info, folder, normative
        self.device = device or torch.device("cpu")
        self.model = fuse_batchnorm(model).to(self.device)  # eval-mode BN folded into convs
        self.has_network = any(True for _ in self.model.parameters())

    @classmethod
    def load(cls, source: str | Path, accelerator: str = "auto") -> Detector:
        """A run directory, or the name of a bundled model (`brainuad models`)."""
        from brainuad.bundled import resolve

        device = device_for(accelerator)
        folder = resolve(source)
        cfg = rundir.read_config(folder)
        model = build_model(cfg.model)
        state = rundir.load_weights(folder)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise BrainUADError(f"{folder / rundir.MODEL}: weights do not fit the model of "
                                f"{folder / rundir.CONFIG} ({str(err).splitlines()[0]})") from err
        return cls(cfg, model, rundir.read_threshold_info(folder), folder, device,
                   Normative.load(folder))

    @property
    def where(self) -> str:
        return str(self.folder or "this model")

    def settings(self, slices: str | None = None, residual: str | None = None,
                 precision: str | None = None, score: str | None = None) -> DetectConfig:
        """The model's detection settings with some replaced (a copy)."""
        return self.cfg.detect.replaced(slices=slices, residual=residual, precision=precision,
                                        score=score)

    def precision(self, detect: DetectConfig) -> str:
        """The precision `detect` runs in here: `auto` is bf16 where the device computes it
        natively (a CPU with AVX-512 bf16 or AMX, a GPU that supports it), else 32; a model
        without a network (the threshold baseline) has nothing to compute in bf16."""
        if not self.has_network:
            return "32"
        if detect.precision != "auto":
            return detect.precision
        if self.device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "32"
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32"

    def scoring_key(self, detect: DetectConfig, precision: str | None = None) -> str:
        return detect.scoring_key(precision or self.precision(detect))

    def quantiles(self, detect: DetectConfig) -> thresholds.Quantiles:
        if self.info is None:
            raise BrainUADError(f"{self.where}: not calibrated (no threshold.json)")
        return thresholds.quantiles(self.info, self.scoring_key(detect), self.where)

    def operating_point(self, detect: DetectConfig) -> dict | None:
        """The threshold chosen for this scoring on a labelled validation set, if any."""
        return (self.info or {}).get("operating_points", {}).get(self.scoring_key(detect))

    def threshold(self, detect: DetectConfig, fpr: float | None = None) -> float:
        """The mask's threshold: the one flagging `fpr` of the calibration scans' voxels; else
        the model's validation operating point for this scoring, where it has one; else its
        percentile (98th: 2 %) of the calibration scans' scores."""
        quantiles = self.quantiles(detect)
        if fpr is not None:
            return quantiles.at_fpr(fpr)
        point = self.operating_point(detect)
        if point is not None:
            return float(point["threshold"])
        return quantiles.at_percentile(detect.percentile)

    def rule(self, detect: DetectConfig, fpr: float | None = None) -> str:
        """How `threshold` chose, in words."""
        if fpr is not None:
            return f"fpr {fpr}"
        if self.operating_point(detect) is not None:
            return "validation operating point (best Dice on labelled validation scans)"
        return f"percentile {detect.percentile}"

    def score(self, data: SubjectSlices, detect: DetectConfig,
              clock: Stopwatch | None = None) -> Scored:
        """The paper's score: residual per slice (`postprocess.residual_map`), 5x5x5 median over
        the stack, back on the volume grid, times the eroded brain mask. The normative scores
        (`detect.score`): the same steps on the scan's own voxels."""
        clock = clock or Stopwatch()
        start = time.perf_counter()
        floor = None
        if detect.residual == "hyperintense":  # the input's quantile over its whole brain
            floor = float(np.quantile(data.volume.data[data.mask.data > 0],
                                      detect.hyper_quantile))
        if detect.score != "residual":
            return self._score_volume(data, detect, floor, clock, start)
        reconstruction = reconstruct(self.model, data.images, detect.batch_size,
                                     self.precision(detect))
        clock.lap("reconstruct")
        residual = residual_map(data.images, reconstruction, data.masks, detect.residual, floor)
        # Only brain voxels are ever scored; one voxel more covers the interpolation to the grid.
        near_brain = ndimage.binary_dilation(data.masks > 0)
        filtered = median_filter(residual, detect.median_size, where=near_brain)
        clock.lap("residual + median")
        volume = to_volume(filtered, data.geometry)
        brain = data.mask.data > 0
        region = to_volume(np.ones_like(filtered), data.geometry) > 0.5
        scored = eroded_mask(brain, data.volume.spacing, detect.erosion_mm) & region
        clock.lap("to volume + eroded mask")
        return Scored((volume * scored).astype(np.float32), brain & region, scored,
                      time.perf_counter() - start, len(data.geometry.indices))

    def _score_volume(self, data: SubjectSlices, detect: DetectConfig, floor: float | None,
                      clock: Stopwatch, start: float) -> Scored:
        """`normative`: the z-score against the normative maps, shaped by `detect.residual`;
        `product`: the network's residual (shaped so) times the positive z-score."""
        if self.normative is None:
            raise BrainUADError(f"{self.where}: has no normative model ({FILE}); score "
                                f"{detect.score!r} needs one (retrain, or `brainuad calibrate`)")
        brain = data.mask.data > 0
        image = np.clip(data.volume.data, 0, 1) * brain
        z = self.normative.zscore(image, brain, data.volume.affine, detect.normative_floor)
        if detect.score == "normative":
            value = shape_residual(z, image, brain, detect.residual, floor)
        else:
            reconstruction = reconstruct(self.model, data.images, detect.batch_size,
                                         self.precision(detect))
            clock.lap("reconstruct")
            difference = to_volume((data.images - reconstruction) * data.masks, data.geometry)
            value = (shape_residual(difference, image, brain, detect.residual, floor)
                     * np.maximum(z, 0))
        clock.lap("normative")
        region = to_volume(np.ones_like(data.images), data.geometry) > 0.5
        value = median_filter(value * region, detect.median_size,
                              where=ndimage.binary_dilation(brain) & region)
        clock.lap("median")
        scored = eroded_mask(brain, data.volume.spacing, detect.erosion_mm) & region
        return Scored((value * scored).astype(np.float32), brain & region, scored,
                      time.perf_counter() - start, len(data.geometry.indices))

    def segment(self, scored: Scored, threshold: float, detect: DetectConfig) -> np.ndarray:
        return segment(scored.score, threshold, detect.min_component)

    def histograms(self, subjects: list, settings: list[DetectConfig],
                   progress: Callable | None = None, manifest: Path | None = None,
                   shard: tuple[int, int] = (0, 1), skip: Collection[str] = (),
                   labelled: bool = False) -> dict[str, list[thresholds.ScoreHistogram]]:
        """Histograms of the scored voxels of `subjects` under every scoring of `settings`, in
        every precision it may run in, keyed by scoring (each subject read once), but for the
        keys in `skip`: `[all voxels]`, or with `labelled` `[normal, lesion]` voxels by each
        subject's label. With `shard` (rank, world), only every world-th subject from the
        rank-th: the histograms of all shards add up to the whole."""
        runs = {}
        for detect in settings:
            for precision in (PRECISIONS if self.has_network else ("32",)):
                key = self.scoring_key(detect, precision)
                if key not in skip:
                    runs[key] = (detect, precision)
        histograms = {key: [thresholds.ScoreHistogram(*SCORE_RANGES[detect.score])
                            for _ in range(1 + labelled)] for key, (detect, _) in runs.items()}
        slice_modes = sorted({detect.slices for detect, _ in runs.values()})
        mine = subjects[shard[0]::shard[1]]
        progress = progress or (lambda iterable, total: iterable)
        for subject in progress(mine, total=len(mine)):
            for mode in slice_modes:
                data = load_subject_slices(subject, self.cfg.train.modality,
                                           self.cfg.model.image_size, mode, manifest)
                lesion = (label_on_grid(subject, data.volume) if labelled
                          else np.zeros(data.volume.shape, bool))
                for key, (detect, precision) in runs.items():
                    if detect.slices == mode:
                        result = self.score(data, detect.replaced(precision=precision))
                        histograms[key][0].add(result.score[result.scored & ~lesion])
                        if labelled:
                            histograms[key][1].add(result.score[result.scored & lesion])
        return histograms


def label_on_grid(subject, volume) -> np.ndarray:
    """A subject's lesion label on its preprocessed volume's grid: as it is, or, for a
    registered subject whose label lies on its raw scan's grid, carried to the atlas."""
    if subject.transform is None or subject.native is None:
        return load_binary(subject.label, volume, "label").data > 0
    from brainuad.io import load_image
    from brainuad.register import read_transform, to_atlas

    native = load_image(subject.native)
    label = load_binary(subject.label, native, "label")
    return to_atlas(label.data.astype(np.float32), native.affine, volume.shape, volume.affine,
                    read_transform(subject.transform), nearest=True) > 0.5


#: Where scores lie, for the histograms: residuals in [0, 1] (images are in [0, 1],
#: reconstructions end in a sigmoid); z-scores above 50 are counted at 50 (and the exact maximum
#: kept), far beyond any threshold.
SCORE_RANGES = {"residual": (0.0, 1.0), "normative": (0.0, 50.0), "product": (0.0, 50.0)}
