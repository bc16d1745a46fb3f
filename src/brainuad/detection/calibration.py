"""Thresholds, fixed when a model is trained or released, never at detection time: label-free
quantiles of its scores on held-out healthy scans (`calibrate`), and operating points chosen on
a labelled validation set (`choose_operating_point`)."""

from __future__ import annotations

from pathlib import Path

import torch

from brainuad.config import SCORES, DetectConfig, RunConfig
from brainuad.detection.detector import Detector
from brainuad.errors import BrainUADError
from brainuad.io.manifest import read_manifest
from brainuad.models import folder as model_folder
from brainuad.models.common import normative_maps as normative
from brainuad.models.registry import check_scoring
from brainuad.runtime import distributed
from brainuad.scoring import thresholds


def calibrate(run: str | Path, manifest_path: str | Path | None = None,
              settings: list[DetectConfig] | None = None, network: torch.nn.Module | None = None,
              cfg: RunConfig | None = None) -> dict:
    """Take a run's thresholds on its held-out scans (`thresholds.calibration_subjects` of the
    manifest it was trained on) and write `threshold.json`: for the run's own scoring when it
    was just trained (`cfg`, with its `network` for a network kind), else the run's saved model
    with `settings` added to the scorings it has (other slices, residuals, scores), each in
    every precision detection may use. A scoring against normative maps fits them first (from
    the training scans). Under several processes each counts its share of the scans and rank 0
    writes the sums. The only place thresholds are made: detection only reads them."""
    run = Path(run)
    manifest_path = Path(manifest_path or model_folder.training_manifest(run, "calibration"))
    manifest = read_manifest(manifest_path)
    rank, world = distributed.shard()
    if cfg is None:
        detector = Detector.load(run, accelerator="cpu")
        cfg, previous = detector.cfg, detector.info
    else:
        device = next(network.parameters()).device if network is not None else None
        detector, previous = Detector(cfg, network, folder=run, device=device), None
    excluded = model_folder.read_provenance(run).get("excluded_subjects", {}) if rank == 0 \
        else {}
    excluded = distributed.from_rank0(excluded)
    wanted = [cfg.detect, *(settings or [])] if previous is None else (settings or [])
    for detect in wanted:  # before any work
        check_scoring(cfg, detect.score, str(run))
    if detector.maps is None and any(SCORES[d.score].needs_maps for d in wanted):
        training = [s for s in manifest.select(split="train", health=cfg.train.health)
                    if s.subject not in excluded]
        sums = normative.accumulate(training, cfg.train.modality, manifest_path,
                                    shard=(rank, world))
        sums.sums = distributed.sum_arrays(sums.sums)[0]
        detector.set_maps(sums.finish())
        if rank == 0:
            detector.maps.save(run)
    split, subjects = thresholds.calibration_subjects(manifest, cfg.train.health, excluded,
                                                      cfg.detect.threshold_subjects)
    names = [s.subject for s in subjects]
    histograms = {}
    for key, pair in detector.histograms(subjects, wanted, manifest_path, shard=(rank, world),
                                         skip=(previous or {}).get("scorings", {}),
                                         desc="threshold" if rank == 0 else None).items():
        distributed.merge_histogram(pair[0])
        histograms[key] = pair[0]
    if previous is None:
        info = thresholds.new_info(histograms, split, names, cfg.detect.percentile,
                                   detector.scoring_key(cfg.detect, "32"))
    else:
        info = thresholds.add_scorings(previous, histograms, names)
    if rank == 0:
        model_folder.write_threshold(run, info)
        if previous is not None:  # maps may have been added: model.json lists them
            model_folder.describe_run(run, cfg).write(run)
    return info


def choose_operating_point(run: str | Path, labelled: str | Path,
                           settings: list[DetectConfig] | None = None,
                           split: str = "val") -> dict:
    """For each scoring (the run's own, or `settings`), the threshold with the best Dice over
    all lesion and normal voxels of a labelled validation set (`brainuad synth --from`: lesions
    drawn into held-out scans), in every precision; kept in threshold.json's
    `operating_points`, which detection then uses instead of the label-free percentile. Test
    subjects and subjects the run trained on are refused: an operating point chosen on them
    would flatter every figure measured with it."""
    run = Path(run)
    if split == "test":
        raise BrainUADError("an operating point is never chosen on the test split")
    detector = Detector.load(run, accelerator="cpu")
    manifest = read_manifest(labelled)
    subjects = [s for s in manifest.select(split=split) if s.label is not None]
    if not subjects:
        raise BrainUADError(f"{manifest.path}: no labelled subjects in split {split!r}")
    trained = set(model_folder.read_provenance(run).get("training_subjects", []))
    overlap = sorted(trained & {s.subject for s in subjects})
    if overlap:
        raise BrainUADError(f"{manifest.path}: {', '.join(overlap)} trained {run}: choose the "
                            "operating point on scans the model has not seen")
    histograms = detector.histograms(subjects, settings or [detector.cfg.detect],
                                     manifest.path, labelled=True, desc="choose")
    names = [s.subject for s in subjects]
    points = {}
    for key, (normal, lesion) in histograms.items():
        dice, threshold = thresholds.best_dice(lesion, normal)
        points[key] = {"threshold": threshold, "dice": dice,
                       "manifest": str(manifest.path.resolve()), "subjects": names}
    info = {**detector.info,
            "operating_points": {**detector.info.get("operating_points", {}), **points}}
    model_folder.write_threshold(run, info)
    return info
