"""The one object that turns scans into anomaly scores and masks: a model folder (a run
directory or a bundled model) loaded for detection, whatever its kind, shared by `train`'s
calibration, `use-epoch`, `calibrate`, `detect` and `segment`.

A model folder is complete and read-only here: config, weights and thresholds for every
precision detection may use. Nothing in this module writes into it or needs the training scans.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainuad.config import SCORES, DetectConfig, RunConfig
from brainuad.data.slices import load_preprocessed
from brainuad.errors import BrainUADError
from brainuad.io.images import Volume, load_binary, load_image
from brainuad.models.bundled import resolve
from brainuad.models.common.normative_maps import Normative
from brainuad.models.folder import (
    MODEL,
    ModelInfo,
    load_weights,
    read_config,
    read_info,
    read_threshold_info,
)
from brainuad.models.kind import Scorer
from brainuad.models.registry import build_network, check_scoring, kind_of
from brainuad.preprocessing.transforms import read_transform, to_atlas
from brainuad.runtime.clock import Stopwatch
from brainuad.runtime.devices import PRECISIONS, device_for, native_precision
from brainuad.runtime.progress import track
from brainuad.scoring import thresholds
from brainuad.scoring.postprocess import Scored, at_normal_sites, segment

if TYPE_CHECKING:
    import torch
    from torch import nn


class Detector:
    """A model ready to score scans: its config, its kind's scorer (with its network on
    `device` and its normative maps, where it has them) and its thresholds (`threshold.json`;
    None while a run is being calibrated). A kind without a network has no device and never
    imports torch."""

    def __init__(self, cfg: RunConfig, network: nn.Module | None = None,
                 info: dict | None = None, folder: Path | None = None,
                 device: torch.device | None = None, maps: Normative | None = None,
                 model_info: ModelInfo | None = None) -> None:
        self.cfg, self.info, self.folder, self.model_info = cfg, info, folder, model_info
        self.kind = kind_of(cfg.model.name)
        if device is None and network is not None:
            import torch

            device = torch.device("cpu")
        self.device = device
        self._network, self.maps = network, maps
        self._scorer: Scorer | None = None

    @classmethod
    def load(cls, source: str | Path, accelerator: str = "auto") -> Detector:
        """A run directory, or the name of a bundled model (`brainuad models`)."""
        # an explicit gpu (or a wrong name) is checked first; auto and cpu only where a network
        # runs (a device needs torch, which the tissue kind never imports)
        device = device_for(accelerator) if accelerator not in ("auto", "cpu") else None
        folder = resolve(source)
        model = read_info(folder)
        cfg = read_config(folder)
        kind = kind_of(cfg.model.name)
        if kind.name != model.kind or cfg.train.modality != model.modality:
            raise BrainUADError(f"{folder}: model.json says a {model.kind} model of "
                                f"{model.modality}, its config a {kind.name} model of "
                                f"{cfg.train.modality}")
        network = build_network(cfg.model)
        if network is not None and device is None:
            device = device_for(accelerator)
        if network is not None:
            try:
                network.load_state_dict(load_weights(folder))
            except RuntimeError as err:
                raise BrainUADError(f"{folder / MODEL}: weights do not fit the model of its "
                                    f"config ({str(err).splitlines()[0]})") from err
        return cls(cfg, network, read_threshold_info(folder), folder, device,
                   Normative.load(folder), model)

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self.kind.make_scorer(self.cfg, self._network, self.maps,
                                                 self.device)
        return self._scorer

    @property
    def network(self) -> nn.Module | None:
        """The network as detection runs it (batch norm folded; None without one)."""
        return getattr(self.scorer, "network", None)

    def set_maps(self, maps: Normative) -> None:
        self.maps, self._scorer = maps, None

    @property
    def where(self) -> str:
        return str(self.folder or "this model")

    def settings(self, **values: str | None) -> DetectConfig:
        """The model's detection settings with some replaced (None: kept; a copy), checked
        against what its kind can score."""
        detect = self.cfg.detect.replaced(**values)
        check_scoring(self.cfg, detect.score, self.where)
        return detect

    def precision(self, detect: DetectConfig) -> str:
        """The precision `detect` runs in here: `auto` is bf16 where the device computes it
        natively, else 32; a model without a network has nothing to compute in bf16."""
        if not self.kind.network:
            return "32"
        if detect.precision != "auto":
            return detect.precision
        return native_precision(self.device)

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
            return f"flags {fpr} of the calibration scans' scored voxels"
        if self.operating_point(detect) is not None:
            return "validation operating point (best Dice on labelled validation scans)"
        return f"percentile {detect.percentile}"

    def score(self, image: Volume, mask: Volume, detect: DetectConfig,
              clock: Stopwatch | None = None) -> Scored:
        """A preprocessed scan's filtered anomaly score (its kind's scorer) and scored region."""
        return self.scorer.score(image, mask, detect, self.precision(detect),
                                 clock or Stopwatch())

    def segment(self, scored: Scored, threshold: float, detect: DetectConfig,
                affine: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The lesion mask of a scan scored on the grid `affine`, and what it left out at normal
        bright places (`detect.normal_sites` "remove"; None where not looked at: "flag", or a
        grid that is not the template's)."""
        lesions = segment(scored.score, threshold, detect.min_component, detect.seed_margin)
        if detect.normal_sites == "flag":
            return lesions, None
        removed = at_normal_sites(lesions, affine)
        return (lesions, None) if removed is None else (lesions & ~removed, removed)

    def histograms(self, subjects: list, settings: list[DetectConfig],
                   manifest: Path | None = None, shard: tuple[int, int] = (0, 1),
                   skip: Collection[str] = (), labelled: bool = False,
                   desc: str | None = None) -> dict[str, list[thresholds.ScoreHistogram]]:
        """Histograms of the scored voxels of `subjects` under every scoring of `settings`, in
        every precision it may run in, keyed by scoring (each subject read once), but for the
        keys in `skip`: `[all voxels]`, or with `labelled` `[normal, lesion]` voxels by each
        subject's label. With `shard` (rank, world), only every world-th subject from the
        rank-th: the histograms of all shards add up to the whole. `desc` names the progress."""
        runs = {}
        for detect in settings:
            check_scoring(self.cfg, detect.score, self.where)
            for precision in (PRECISIONS if self.kind.network else ("32",)):
                key = self.scoring_key(detect, precision)
                if key not in skip:
                    runs[key] = (detect, precision)
        histograms = {key: [thresholds.ScoreHistogram(*SCORES[detect.score].range)
                            for _ in range(1 + labelled)] for key, (detect, _) in runs.items()}
        mine = subjects[shard[0]::shard[1]]
        for subject in (track(mine, desc) if desc else mine):
            image, mask = load_preprocessed(subject, self.cfg.train.modality, manifest)
            lesion = (label_on_grid(subject, image) if labelled
                      else np.zeros(image.shape, bool))
            for key, (detect, precision) in runs.items():
                result = self.score(image, mask, detect.replaced(precision=precision))
                histograms[key][0].add(result.score[result.scored & ~lesion])
                if labelled:
                    histograms[key][1].add(result.score[result.scored & lesion])
        return histograms


def label_on_grid(subject, volume: Volume) -> np.ndarray:
    """A subject's lesion label on its preprocessed volume's grid: as it is, or, for a
    registered subject whose label lies on its raw scan's grid, carried to the atlas."""
    if subject.transform is None or subject.native is None:
        return load_binary(subject.label, volume, "label").data > 0
    native = load_image(subject.native)
    label = load_binary(subject.label, native, "label")
    return to_atlas(label.data.astype(np.float32), native.affine, volume.shape, volume.affine,
                    read_transform(subject.transform), nearest=True) > 0.5
