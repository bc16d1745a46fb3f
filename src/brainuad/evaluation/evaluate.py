"""Evaluation of detections against lesion masks: per-subject metrics, summary, figures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainuad.config import SCORES
from brainuad.data.slices import to_ras
from brainuad.detection.cohort import SETTINGS, read_timing
from brainuad.errors import BrainUADError, Failed, attempt, raise_failures
from brainuad.evaluation.metrics import dice, subject_metrics
from brainuad.io.files import file_checksum, write_csv, write_text
from brainuad.io.images import load_binary, load_image
from brainuad.io.manifest import Subject, read_manifest
from brainuad.models.folder import read_provenance
from brainuad.reporting import figures
from brainuad.runtime.progress import track
from brainuad.scoring import thresholds
from brainuad.scoring.postprocess import segment

SUMMARY_METRICS = ("dice", "auroc", "auprc", "best_dice", "lesion_recall", "lesion_precision",
                   "flagged_outside_ml")
#: Flagged voxels farther than this from every lesion count as flagged outside the lesions.
OUTSIDE_MM = 2.0
#: Normal-voxel scores kept per subject for the residual histogram (lesion voxels: all).
HISTOGRAM_SAMPLES = 20_000


@dataclass
class Evaluation:
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    examples: list[figures.Example] = field(default_factory=list)
    normal_scores: list[np.ndarray] = field(default_factory=list)
    lesion_scores: list[np.ndarray] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: scores of every lesion and normal voxel of every subject (for the dataset-level Dice)
    pooled: tuple[thresholds.ScoreHistogram, ...] = ()

    @property
    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """Scores of (a sample of) normal voxels and of all lesion voxels, for Fig. 6."""
        return np.concatenate(self.normal_scores), np.concatenate(self.lesion_scores)


def fpr_key(fpr: str | float) -> str:
    """Column name of the Dice at a training false-positive rate: 0.05 -> dice_fpr5."""
    return f"dice_fpr{100 * float(fpr):g}"


def summarise(rows: list[dict], seconds_per_slice: float | None) -> dict:
    summary: dict = {"subjects": len(rows)}
    extra = [k for k in rows[0] if k.startswith("dice_fpr")] if rows else []
    for key in (*SUMMARY_METRICS, *extra):
        values = np.array([r[key] for r in rows], dtype=float)
        values = values[np.isfinite(values)]
        summary[key] = {"mean": float(values.mean()) if values.size else float("nan"),
                        "sd": float(values.std()) if values.size else float("nan")}
    summary["seconds_per_slice"] = seconds_per_slice
    return summary


def evaluate(pred: str | Path, manifest_path: str | Path, out: str | Path | None = None,
             split: str | None = "test", keep_going: bool = False,
             figure_subjects: int = 4) -> Evaluation:
    """Metrics for every manifest subject of `split` (None: every split) that has a lesion
    label and a prediction in `pred`, but those the detecting model was trained on (left out
    with a warning: they never enter a test figure); writes `subjects.csv`, `summary.json`,
    `fig5_examples.png`, `fig6_histogram.png` to `out` (default: `pred/../eval`). With
    `keep_going`, a subject whose files fail is left out of the summary and named in
    `SubjectsFailed` at the end."""
    pred = Path(pred)
    manifest = read_manifest(manifest_path)
    out = Path(out) if out is not None else pred.parent / "eval"
    detect_info = {}
    if (pred / SETTINGS).is_file():
        try:
            detect_info = json.loads((pred / SETTINGS).read_text())
        except ValueError as err:
            raise BrainUADError(f"{pred / SETTINGS}: damaged ({err})") from err
    trained = _training_subjects(detect_info)
    subjects = [s for s in manifest.select(split=split)
                if s.label is not None and (pred / s.subject / "mask.nii.gz").is_file()]
    warnings = _provenance_warnings(detect_info)
    if any(s.subject in trained for s in subjects):
        left = [s.subject for s in subjects if s.subject in trained]
        warnings.append(f"left out, the model was trained on them: {', '.join(left)}")
        subjects = [s for s in subjects if s.subject not in trained]
    if not subjects:
        raise BrainUADError(f"{pred}: no predictions for subjects of {manifest.path} (split "
                            f"{split or 'any'}) that have a label and did not train the model; "
                            "run `brainuad detect` on this manifest first")
    result = Evaluation(warnings=warnings, pooled=tuple(
        thresholds.ScoreHistogram(*SCORES[detect_info.get("score", "residual")].range)
        for _ in range(2)))
    rng = np.random.default_rng(0)
    outcomes, done = [], []
    for subject in track(subjects, "evaluate"):
        outcome = attempt(keep_going, _evaluate_subject, subject, pred / subject.subject,
                          detect_info, manifest.path, rng,
                          len(result.examples) < figure_subjects, result.pooled)
        outcomes.append(outcome)
        if isinstance(outcome, Failed):
            continue
        row, normal, lesion, example = outcome
        done.append(subject)
        result.rows.append(row)
        result.normal_scores.append(normal)
        result.lesion_scores.append(lesion)
        if example is not None:
            result.examples.append(example)
    names = [s.subject for s in subjects]
    if not done:
        raise_failures(names, outcomes, "evaluate")
    subjects = done
    chosen = [t for t in (read_timing(pred / s.subject) for s in subjects) if t is not None]
    per_slice = (sum(t["seconds"] for t in chosen) / max(sum(t["slices"] for t in chosen), 1)
                 if chosen else None)
    dataset_dice, dataset_threshold = thresholds.best_dice(*result.pooled)
    lesioned = [r for r in result.rows if r["lesion_voxels"] + r["lesion_voxels_outside"] > 0]
    healthy = [r["flagged_ml"] for r in result.rows if r not in lesioned]
    outside = sum(r["lesion_voxels_outside"] for r in lesioned)
    result.summary = {"model": detect_info.get("model"), "z": detect_info.get("z"),
                      "slices": detect_info.get("slices"),
                      "threshold": detect_info.get("threshold"),
                      "residual": detect_info.get("residual"),
                      "score": detect_info.get("score", "residual"), "split": split or "all",
                      **summarise(lesioned, per_slice),
                      "dataset_best_dice": dataset_dice,
                      "dataset_best_threshold": dataset_threshold,
                      "lesion_outside_fraction": outside / max(
                          outside + sum(r["lesion_voxels"] for r in lesioned), 1),
                      "healthy_subjects": len(healthy),
                      "flagged_outside_ml_max": max(r["flagged_outside_ml"]
                                                    for r in result.rows)}
    if healthy:  # scans without lesions: what a detector flags there is all false positive
        result.summary["healthy_flagged_ml"] = {"mean": float(np.mean(healthy)),
                                                "max": float(np.max(healthy))}
    result.summary["warnings"] = result.warnings
    write_outputs(result, out)
    raise_failures(names, outcomes, "evaluate")
    return result


def _evaluate_subject(subject: Subject, folder: Path, detect_info: dict, manifest: Path,
                      rng: np.random.Generator, want_example: bool,
                      pooled: tuple[thresholds.ScoreHistogram, ...]) -> tuple:
    """One subject's metrics row, histogram samples and (if it has a lesion and `want_example`)
    a Fig. 5 example; its lesion and normal scores go into `pooled`."""
    score = load_image(folder / "score.nii.gz", allow_blank=True)
    prediction = load_binary(folder / "mask.nii.gz", score, "mask").data
    region = load_binary(folder / "region.nii.gz", score, "region").data
    truth = load_binary(subject.label, score, "label").data
    metrics = subject_metrics(score.data, prediction, truth, region)
    # Dice at the thresholds flagging 1/5/10 % of the calibration scans' voxels, the same
    # post-processing applied to the score map as written.
    inside = region > 0
    for fpr, threshold in detect_info.get("fpr_thresholds", {}).items():
        flagged = segment(score.data, threshold, detect_info.get("min_component", 1),
                          detect_info.get("seed_margin", 0.0))
        metrics[fpr_key(fpr)] = dice(flagged[inside], truth[inside] > 0)
    # lesion voxels no score could reach: outside the scored brain slices or the brain mask
    metrics["lesion_voxels_outside"] = float(((truth > 0) & ~inside).sum())
    voxel_ml = abs(np.linalg.det(score.affine[:3, :3])) / 1000
    metrics["flagged_ml"] = float(prediction.sum() * voxel_ml)
    # what a detector flags away from every lesion (the lesions dilated by 2 mm): false alarms
    near = _dilated(truth > 0, score.spacing, OUTSIDE_MM)
    metrics["flagged_outside_ml"] = float(((prediction > 0) & ~near).sum() * voxel_ml)
    row = {"subject": subject.subject, "health": subject.health, **metrics}
    lesion = (truth > 0) & inside
    pooled[0].add(score.data[lesion])
    pooled[1].add(score.data[inside & ~lesion])
    normal = score.data[inside & ~lesion]
    normal = rng.choice(normal, min(HISTOGRAM_SAMPLES, normal.size), replace=False)
    example = None
    if want_example and truth.any():
        modality = detect_info.get("modality") or next(iter(subject.images))
        # Registered subjects are scored on their raw scan's grid: show that scan.
        image = load_image(subject.native or subject.image(modality, manifest))
        ornt = nib.orientations.io_orientation(score.affine)
        volumes = [to_ras(v, ornt) for v in (image.data, score.data, prediction, truth)]
        z = int(np.argmax(volumes[3].sum(axis=(0, 1))))  # the slice with the most lesion
        example = figures.Example(subject.subject, *(v[:, :, z] for v in volumes))
    return row, normal, score.data[lesion], example


def _dilated(mask: np.ndarray, spacing: np.ndarray, mm: float) -> np.ndarray:
    """`mask` grown by `mm` (an ellipsoid of that radius in millimetres)."""
    radius = np.maximum(np.round(mm / np.asarray(spacing)), 1).astype(int)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball = sum((g * s / mm) ** 2 for g, s in zip(grid, spacing, strict=True)) <= 1
    return ndimage.binary_dilation(mask, structure=ball) if mask.any() else mask


def _training_subjects(detect_info: dict) -> set[str]:
    """The subjects the detecting run trained on (its provenance.json), if it says."""
    run = detect_info.get("run")
    if not run or not Path(run).is_dir():
        return set()
    return set(read_provenance(Path(run)).get("training_subjects", []))


def _provenance_warnings(detect_info: dict) -> list[str]:
    """A warning when the manifest the detecting run was trained on changed (or is gone) since
    training: its model and threshold then no longer describe the scans named there."""
    run = detect_info.get("run")
    if not run or not Path(run).is_dir():
        return []
    recorded = read_provenance(Path(run))
    source, checksum = recorded.get("manifest"), recorded.get("manifest_sha256")
    if not source or not checksum:
        return []
    if not Path(source).is_file():
        return [f"{source}: the manifest run {run} was trained on is gone"]
    if file_checksum(Path(source)) != checksum:
        return [f"{source}: changed since run {run} was trained on it (sha256 differs); its "
                "model and threshold may not match these scans: retrain, or restore it"]
    return []


def write_outputs(result: Evaluation, out: Path) -> None:
    write_csv(out / "subjects.csv", result.rows)
    write_text(out / "summary.json", json.dumps(result.summary, indent=2) + "\n")
    name = result.summary.get("model") or "model"
    figures.figure_examples({name: result.examples}, out / "fig5_examples.png")
    figures.figure_histograms({name: result.histogram}, out / "fig6_histogram.png",
                             thresholds={name: result.summary.get("threshold")})
