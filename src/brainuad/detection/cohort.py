"""`brainuad detect`: a manifest's scans scored by a model (`detector.Detector`, the same object
that calibrated its thresholds), thresholded, and written as NIfTI maps on each scan's own grid.

    OUT/detect.json               settings, scoring and threshold (the same for every shard)
    OUT/<subject>/score.nii.gz    filtered anomaly score
    OUT/<subject>/region.nii.gz   the brain voxels that were scored
    OUT/<subject>/mask.nii.gz     lesion mask (written last: the subject is done)
    OUT/<subject>/timing.json     seconds per stage
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from brainuad.config import DetectConfig
from brainuad.data.slices import load_preprocessed
from brainuad.detection.detector import Detector
from brainuad.errors import BrainUADError, attempt, raise_failures
from brainuad.io.files import remove_partials, write_text
from brainuad.io.images import load_image, save_volume
from brainuad.io.manifest import Subject, read_manifest, shard
from brainuad.io.sitk import to_sitk
from brainuad.preprocessing.transforms import maps_to_native, read_transform
from brainuad.runtime.clock import Stopwatch
from brainuad.runtime.progress import track

#: False-positive rates on the calibration scans at which `evaluate` also reports Dice.
REPORTED_FPRS = (0.01, 0.05, 0.10)
TIMING = "timing.json"  # a subject's detection timings, beside its maps
SETTINGS = "detect.json"


@dataclass(frozen=True)
class DetectOptions:
    """What `detect` runs on and how: `scoring` replaces the model's own detection settings
    (`slices`, `residual`, `score`, `precision`); the threshold flags a fraction `fpr` of the
    calibration scores, else it is the model's validation operating point, else its
    percentile. The networks run on `accelerator`; `workers` processes; `shard` "i/n"."""

    split: str | None = None
    shard: str | None = None
    fpr: float | None = None
    accelerator: str = "auto"
    workers: int = 1
    keep_going: bool = False
    scoring: dict[str, str | None] = field(default_factory=dict)


def read_timing(folder: Path) -> dict | None:
    """The timings `detect` wrote in a subject's output folder (None: none there)."""
    path = folder / TIMING
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise BrainUADError(f"{path}: damaged ({err})") from err


def detect_manifest(model: str | Path, manifest_path: str | Path, out: str | Path | None = None,
                    options: DetectOptions | None = None) -> Path:
    """Write `out/<subject>/{score,region,mask}.nii.gz` and `timing.json` for every (selected)
    subject, on the scan's own grid and affine, plus `out/detect.json` (written first, the same
    for every shard and every rerun, so shards sharing `out` and killed runs lose nothing).

    `model` is a run directory (`out` defaults to `model/pred`) or a bundled model's name. A
    scoring the model was not calibrated for is a clear error (`brainuad calibrate` adds one):
    detection never needs the training scans and never writes into the model's folder.
    Subjects whose outputs exist are skipped. With `keep_going`, a subject that fails does not
    stop the others; `SubjectsFailed` names it at the end."""
    options = options or DetectOptions()
    detector = Detector.load(model, options.accelerator)
    detect = detector.settings(**options.scoring)
    if out is None and not Path(model).is_dir():
        raise BrainUADError(f"{model}: a bundled model is read-only; give --out")
    manifest = read_manifest(manifest_path)
    subjects = manifest.select(split=options.split) if options.split else manifest.subjects
    if not subjects:
        raise BrainUADError(f"{manifest.path}: no subjects with split {options.split!r}")
    subjects = shard(subjects, options.shard, manifest.path)
    out = Path(out) if out is not None else Path(model) / "pred"
    threshold = detector.threshold(detect, options.fpr)
    _write_settings(out, detector, detect, threshold, options.fpr)
    jobs = [(subject, out / subject.subject, detect, threshold, manifest.path,
             options.keep_going) for subject in subjects]
    if options.workers > 1 and len(jobs) > 1:
        # each process loads the model once and takes subjects as they come; every subject's
        # files are its own, so the processes never write the same file
        with get_context("spawn").Pool(options.workers, initializer=_load_worker,
                                       initargs=(str(model), options.accelerator)) as pool:
            results = list(track(pool.imap(_in_worker, jobs), "detect", len(jobs)))
    else:
        _worker["detector"] = detector
        results = [_in_worker(job) for job in track(jobs, "detect")]
    raise_failures([s.subject for s in subjects], results, "detect")
    return out


def _write_settings(out: Path, detector: Detector, detect: DetectConfig, threshold: float,
                    fpr: float | None) -> None:
    """detect.json, unless `out` holds it already for the same model and scoring."""
    path = out / SETTINGS
    try:
        previous = json.loads(path.read_text()) if path.exists() else {}
    except ValueError as err:
        raise BrainUADError(f"{path}: damaged ({err}); remove it or give another --out") from err
    settings = {"run": str(detector.folder.resolve()), "scoring": detector.scoring_key(detect),
                "threshold": threshold, "min_component": detect.min_component,
                "seed_margin": detect.seed_margin, "normal_sites": detect.normal_sites}
    # detections made before a setting existed were made with its default
    defaults = {k: getattr(DetectConfig, k) for k in ("min_component", "seed_margin",
                                                      "normal_sites")}
    if previous and any(previous.get(k, defaults.get(k)) != v for k, v in settings.items()):
        raise BrainUADError(f"{out}: holds detections of another run or other settings "
                            f"({previous.get('scoring')}, threshold {previous.get('threshold')});"
                            " give another --out")
    if previous:
        return
    cfg, quantiles = detector.cfg, detector.quantiles(detect)
    write_text(path, json.dumps({
        **settings, "model": cfg.model.name, "kind": detector.kind.name,
        "z": detector.kind.bottleneck(cfg.model), "modality": cfg.train.modality,
        "slices": detect.slices, "residual": detect.residual, "score": detect.score,
        "rule": detector.rule(detect, fpr),
        "fpr_thresholds": {str(f): quantiles.at_fpr(f) for f in REPORTED_FPRS},
    }, indent=2) + "\n")


#: The detector of this process (`--workers`: each worker process loads its own).
_worker: dict = {}


def _load_worker(model: str, accelerator: str) -> None:
    import torch

    torch.set_num_threads(1)  # the workers share the cores
    _worker["detector"] = Detector.load(model, accelerator)


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
    image, mask = load_preprocessed(subject, detector.cfg.train.modality, manifest)
    clock.lap("read")
    scored = detector.score(image, mask, detect, clock)
    start = time.perf_counter()
    lesions, _ = detector.segment(scored, threshold, detect, image.affine)
    seconds = scored.seconds + time.perf_counter() - start
    clock.lap("threshold + components")
    maps, affine = {"score": scored.score, "region": scored.region, "mask": lesions}, image.affine
    if subject.transform is not None and subject.native is not None:
        # a registered subject's maps go back onto its raw scan's grid (masks by nearest
        # neighbour, the score linearly), where its label and its user's viewer are
        native = load_image(subject.native)
        maps = maps_to_native(maps, image.affine, to_sitk(native.data, native.affine),
                              read_transform(subject.transform))
        affine = native.affine
        clock.lap("to raw grid")
    save_volume(folder / "score.nii.gz", maps["score"], affine, np.float32)
    save_volume(folder / "region.nii.gz", maps["region"], affine, np.uint8)
    save_volume(folder / "mask.nii.gz", maps["mask"], affine, np.uint8)  # last: done
    clock.lap("write")
    timing = {"seconds": seconds, "slices": scored.n_slices, "stages": clock.stages}
    write_text(folder / TIMING, json.dumps(timing, indent=2) + "\n")
