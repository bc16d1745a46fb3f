"""`brainuad detect`: a manifest's scans scored by a model (`detector.Detector`, the same object
that calibrated its thresholds), thresholded, and written as NIfTI maps on each scan's own grid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from brainuad.config import DetectConfig
from brainuad.detector import Detector, Stopwatch
from brainuad.errors import BrainUADError, attempt, raise_failures
from brainuad.io import load_image, remove_partials, save_volume, write_text
from brainuad.manifest import Subject, read_manifest, shard
from brainuad.slices import load_subject_slices


def _on_native_grid(maps: dict[str, np.ndarray], affine: np.ndarray,
                    subject: Subject) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A registered subject's maps carried back onto its raw scan's grid (masks by nearest
    neighbour, the score linearly), where its lesion label and its user's viewer are."""
    from brainuad.register import maps_to_native, read_transform, to_sitk

    native = load_image(subject.native)
    grid, transform = to_sitk(native.data, native.affine), read_transform(subject.transform)
    return maps_to_native(maps, affine, grid, transform), native.affine


#: False-positive rates on the calibration scans at which `evaluate` also reports Dice.
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
                    accelerator: str = "auto", score: str | None = None,
                    workers: int = 1) -> Path:
    """Write `out/<subject>/{score,mask,region}.nii.gz` for every (selected) subject, on the
    scan's own grid and affine, with its stage timings in `out/<subject>/timing.json`, plus
    `out/detect.json` with the settings and thresholds (written first, the same for every shard
    and every rerun, so shards sharing `out` and killed runs lose nothing).

    `run` is a run directory or a bundled model's name (then `out` is required). The mask's
    threshold is the one flagging a fraction `fpr` of the model's calibration scores, else its
    validation operating point (`choose_operating_point`), else its percentile (98th) of them; a
    scoring (`slices`, `residual`, `score`, `precision`) the model
    was not calibrated for is a clear error (`brainuad calibrate` adds one): detection never
    needs the training scans and never writes into the model's folder. Subjects whose outputs
    already exist are skipped (outputs are written atomically, mask last). With `keep_going`, a
    subject that fails does not stop the others; `SubjectsFailed` names it at the end. The
    networks run on `accelerator` (`detector.device_for`); everything else on the CPU.
    With `workers` > 1, subjects are detected in that many processes.
    """
    detector = Detector.load(run, accelerator)
    detect = detector.settings(slices, residual, precision, score)
    if out is None and not Path(run).is_dir():
        raise BrainUADError(f"{run}: a bundled model is read-only; give --out")
    manifest = read_manifest(manifest_path)
    subjects = manifest.select(split=split) if split else manifest.subjects
    if not subjects:
        raise BrainUADError(f"{manifest.path}: no subjects with split {split!r}")
    subjects = shard(subjects, shard_spec, manifest.path)
    out = Path(out) if out is not None else Path(run) / "pred"
    summary_path = out / "detect.json"
    try:
        previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    except ValueError as err:
        raise BrainUADError(f"{summary_path}: damaged ({err}); remove it or give another "
                            "--out") from err
    quantiles = detector.quantiles(detect)
    threshold = detector.threshold(detect, fpr)
    settings = {"run": str(detector.folder.resolve()), "scoring": detector.scoring_key(detect),
                "threshold": threshold}
    if previous and any(previous.get(k) != v for k, v in settings.items()):
        raise BrainUADError(f"{out}: holds detections of another run or other settings "
                            f"({previous.get('scoring')}, threshold {previous.get('threshold')});"
                            " give another --out")
    cfg = detector.cfg
    summary = {
        **settings, "model": cfg.model.name, "z": cfg.model.z_description,
        "modality": cfg.train.modality, "slices": detect.slices,
        "residual": detect.residual, "score": detect.score,
        "min_component": detect.min_component,
        "rule": detector.rule(detect, fpr),
        "fpr_thresholds": {str(f): quantiles.at_fpr(f) for f in REPORTED_FPRS},
    }
    if not previous:
        write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    progress = progress or (lambda iterable, total: iterable)
    jobs = [(subject, out / subject.subject, detect, threshold, manifest.path, keep_going)
            for subject in subjects]
    if workers > 1 and len(jobs) > 1:
        # each process loads the model once and takes subjects as they come; every subject's
        # files are its own, so the processes never write the same file
        with get_context("spawn").Pool(workers, initializer=_load_worker,
                                       initargs=(str(run), accelerator)) as pool:
            results = list(progress(pool.imap(_in_worker, jobs), total=len(jobs)))
    else:
        _worker["detector"] = detector
        results = [_in_worker(job) for job in progress(jobs, total=len(jobs))]
    raise_failures([s.subject for s in subjects], results, "detect")
    return out


#: The detector of this process (`--workers`: each worker process loads its own).
_worker: dict = {}


def _load_worker(run: str, accelerator: str) -> None:
    import torch

    torch.set_num_threads(1)  # the workers share the cores
    _worker["detector"] = Detector.load(run, accelerator)


def _in_worker(job: tuple) -> object:
    subject, folder, detect, threshold, manifest, keep_going = job
    return attempt(keep_going, _detect_subject, subject, folder, _worker["detector"], detect,
                   threshold, manifest)


def _detect_subject(subject: Subject, folder: Path, detector: Detector, detect: DetectConfig,
                    threshold: float, manifest: Path) -> None:
    """One subject's score, region and mask NIfTIs in `folder` (nothing if already there), then
    its timings."""
    if (folder / "mask.nii.gz").exists():
        return
    remove_partials(folder)  # of a run that was killed while writing this subject
    clock = Stopwatch()
    data = load_subject_slices(subject, detector.cfg.train.modality,
                               detector.cfg.model.image_size, detect.slices, manifest)
    clock.lap("read + slice")
    scored = detector.score(data, detect, clock)
    start = time.perf_counter()
    mask = detector.segment(scored, threshold, detect)
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
