"""`brainuad segment`: a raw scan in, a lesion mask out, with a model that ships inside the
package (or any run directory): no cohort, no training.

Per scan (a FLAIR as it leaves the scanner: NIfTI, or a folder holding one DICOM series), the
preprocessing of `preprocess` runs in memory (N4, registration to MNI152 checked for
plausibility, template brain mask, CurvatureFlow, [0, 1] scaling), the model scores it and its
threshold cuts the mask, and everything is written on the scan's own grid:

    OUT/<scan>/lesion_mask.nii.gz    0/1
    OUT/<scan>/anomaly_score.nii.gz  the filtered score
    OUT/<scan>/brain_mask.nii.gz     the brain that was scored
    OUT/<scan>/lesions.csv           one row per connected lesion: ml, centroid (scanner mm),
                                     mean and max score
    OUT/<scan>/summary.json          counts, volume, model, threshold, registration, seconds
    OUT/<scan>/report.html           a QC page that opens offline (images embedded)
    OUT/summary.csv                  one row per scan

Every file is written atomically and `summary.json` last, so a scan whose summary exists is
complete and is skipped when the command runs again.
"""

from __future__ import annotations

import csv
import io as _io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainuad import __version__
from brainuad.bundled import DEFAULT, describe
from brainuad.config import DetectConfig
from brainuad.detector import Detector, Stopwatch
from brainuad.errors import BrainUADError, Failed, attempt, raise_failures
from brainuad.io import (
    Volume,
    check_scan,
    load_scan,
    remove_partials,
    save_volume,
    write_text,
)
from brainuad.manifest import Subject, read_manifest
from brainuad.postprocess import CONNECTIVITY
from brainuad.preprocess import PreprocessConfig, prepare_scan
from brainuad.register import maps_to_native, to_sitk
from brainuad.slices import cut_slices

SUMMARY = "summary.json"  # written last: a scan's folder with it is complete
NIFTI = (".nii.gz", ".nii")


@dataclass
class Segmented:
    """One scan's result, as `summary.json` says it."""

    summary: dict = field(default_factory=dict)


def scan_name(path: Path) -> str:
    name = path.name
    for suffix in NIFTI:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_scans(sources: list[str | Path]) -> list[tuple[str, Path]]:
    """(name, path) of every scan given: NIfTI files, folders holding one DICOM series, folders
    of NIfTI files, and manifests (their `flair`, else first image, column). A scan is named
    by its file (or manifest subject); files of the same name by their folder and file."""
    found: list[tuple[str, Path]] = []
    for source in map(Path, sources):
        if source.suffix == ".csv":
            manifest = read_manifest(source)
            for subject in manifest.subjects:
                found.append((subject.subject, subject.images.get("flair")
                              or next(iter(subject.images.values()))))
        elif source.is_dir() and not _has_dicom(source):
            inside = sorted(p for p in source.iterdir() if p.name.endswith(NIFTI))
            inside += sorted(p for p in source.iterdir() if p.is_dir() and _has_dicom(p))
            if not inside:
                raise BrainUADError(f"{source}: no NIfTI file and no DICOM series in it")
            found += [(scan_name(p), p) for p in inside]
        elif source.exists():
            found.append((scan_name(source), source))
        else:
            raise BrainUADError(f"{source}: no such file or folder")
    stems = [name.lower() for name, _ in found]
    found = [(f"{path.parent.name}_{name}" if stems.count(name.lower()) > 1 else name, path)
             for name, path in found]  # patient1/FLAIR.nii.gz, patient2/FLAIR.nii.gz
    seen: dict[str, Path] = {}
    for name, path in found:
        # names are folder names under OUT: ones that differ only in case collide on macOS
        # and Windows file systems
        if name.lower() in seen:
            raise BrainUADError(f"{path}: its name {name!r} is also that of {seen[name.lower()]}"
                                " (folder names must differ by more than case)")
        seen[name.lower()] = path
    return found


def _has_dicom(folder: Path) -> bool:
    import SimpleITK as sitk

    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def segment_scans(sources: list[str | Path], out: str | Path, model: str | Path = DEFAULT,
                  accelerator: str = "auto", fpr: float | None = None,
                  keep_going: bool = False, progress: Callable | None = None,
                  stage_progress: Callable | None = None,
                  preprocess: PreprocessConfig | None = None) -> list[dict]:
    """Segment every scan of `sources` into `out/<scan>/` with `model` (a bundled model's name
    or a run directory), and write `out/summary.csv`. Scans already done are skipped."""
    out = Path(out)
    scans = find_scans(sources)
    if not scans:
        raise BrainUADError("no scans given")
    checked = [attempt(keep_going, check_scan, path) for _, path in scans]  # before any work
    detector = Detector.load(model, accelerator)
    detect = detector.settings()
    threshold = detector.threshold(detect, fpr)
    progress = progress or (lambda iterable, total: iterable)
    preprocess = preprocess or PreprocessConfig(reference=detector.cfg.train.modality)
    results = [check if isinstance(check, Failed) else
               attempt(keep_going, segment_scan, path, out / name, detector, detect,
                       threshold, detector.rule(detect, fpr), stage_progress, preprocess)
               for (name, path), check in progress(list(zip(scans, checked, strict=True)),
                                                   total=len(scans))]
    rows = []
    for (name, path), result in zip(scans, results, strict=True):
        if isinstance(result, Failed):
            rows.append({"scan": name, "path": str(path), "error": result.reason})
        else:
            rows.append(_row(result))
    _write_csv(out / "summary.csv", rows)
    raise_failures([name for name, _ in scans], results, "segment")
    return rows


def _row(summary: dict) -> dict:
    quality = summary.get("registration", {})
    return {"scan": summary["scan"], "path": summary["input"], "lesions": summary["lesions"],
            "lesion_volume_ml": summary["lesion_volume_ml"],
            "brain_volume_ml": summary["brain_volume_ml"], "threshold": summary["threshold"],
            **{f"registration_{k}": v for k, v in quality.items()},
            "warnings": "; ".join(summary["warnings"]), "seconds": summary["seconds"]["total"],
            "error": ""}


def _write_csv(path: Path, rows: list[dict]) -> None:
    buffer = _io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


STAGES = ("read", "preprocess", "score", "lesions", "to scan grid", "write", "report")


def segment_scan(path: Path, folder: Path, detector: Detector, detect: DetectConfig,
                 threshold: float, rule: str, stage_progress: Callable | None = None,
                 preprocess: PreprocessConfig | None = None) -> dict:
    """One scan's outputs in `folder`; its summary (read back if the scan was done before)."""
    if (folder / SUMMARY).is_file():
        return json.loads((folder / SUMMARY).read_text())
    remove_partials(folder)
    clock = Stopwatch()
    start = time.perf_counter()
    bar = (stage_progress or (lambda total, desc: None))(len(STAGES), folder.name)

    def lap(name: str) -> None:
        clock.lap(name)
        if bar is not None:
            bar.update(1)

    raw = load_scan(path)
    lap("read")
    cfg = detector.cfg
    modality = cfg.train.modality
    image, mask, registration = prepare_scan(raw, preprocess or PreprocessConfig(), modality)
    lap("preprocess")
    subject = Subject(folder.name, "test", "patient", {modality: Path(path)})
    data = cut_slices(subject, image, mask, cfg.model.image_size, detect.slices)
    scored = detector.score(data, detect)
    lap("score")
    lesions = detector.segment(scored, threshold, detect)
    lap("lesions")
    grid = to_sitk(raw.data, raw.affine)
    native = maps_to_native({"score": scored.score, "lesions": lesions, "brain": mask.data},
                            image.affine, grid, registration.transform)
    native["lesions"] = native["lesions"] > 0.5
    native["brain"] = native["brain"] > 0.5
    lap("to scan grid")
    table = lesion_table(native["lesions"], native["score"], raw.affine)
    voxel_ml = float(abs(np.linalg.det(raw.affine[:3, :3]))) / 1000
    save_volume(folder / "anomaly_score.nii.gz", native["score"], raw.affine, np.float32)
    save_volume(folder / "brain_mask.nii.gz", native["brain"], raw.affine, np.uint8)
    save_volume(folder / "lesion_mask.nii.gz", native["lesions"], raw.affine, np.uint8)
    if table:
        _write_csv(folder / "lesions.csv", table)
    else:  # the header alone
        write_text(folder / "lesions.csv", "lesion,volume_ml,centroid_x_mm,centroid_y_mm,"
                                           "centroid_z_mm,mean_score,max_score\n")
    lap("write")
    warnings = registration_warnings(registration.quality)
    summary = {
        "scan": folder.name, "input": str(path), "brainuad": __version__,
        "model": {**describe(detector.folder), "folder": str(detector.folder)},
        "threshold": threshold, "rule": rule, "lesions": len(table),
        "lesion_volume_ml": float(native["lesions"].sum() * voxel_ml),
        "brain_volume_ml": float(native["brain"].sum() * voxel_ml),
        "registration": registration.quality, "warnings": warnings,
        "grid": {"shape": list(raw.shape), "spacing_mm": raw.spacing.round(4).tolist()},
        "outputs": ["lesion_mask.nii.gz", "anomaly_score.nii.gz", "brain_mask.nii.gz",
                    "lesions.csv", "report.html"],
    }
    from brainuad.report import segment_report

    segment_report(folder / "report.html", summary, raw, native,
                   registration.images[modality])
    lap("report")
    summary["seconds"] = {**{k: round(v, 3) for k, v in clock.stages.items()},
                          "total": round(time.perf_counter() - start, 3)}
    write_text(folder / SUMMARY, json.dumps(summary, indent=2) + "\n")  # last: done
    if bar is not None:
        bar.close()
    return summary


def lesion_table(lesions: np.ndarray, score: np.ndarray, affine: np.ndarray) -> list[dict]:
    """One row per 26-connected lesion: volume (ml), centroid in scanner (RAS) millimetres,
    mean and max score."""
    labels, count = ndimage.label(lesions, structure=CONNECTIVITY)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(score), labels, index)
    centres = np.array(ndimage.center_of_mass(np.ones_like(score), labels, index))
    world = (affine[:3, :3] @ centres.T).T + affine[:3, 3]
    means = ndimage.mean(score, labels, index)
    maxima = ndimage.maximum(score, labels, index)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000
    order = np.argsort(-sizes)
    return [{"lesion": rank + 1, "volume_ml": round(float(sizes[i] * voxel_ml), 4),
             "centroid_x_mm": round(float(world[i, 0]), 2),
             "centroid_y_mm": round(float(world[i, 1]), 2),
             "centroid_z_mm": round(float(world[i, 2]), 2),
             "mean_score": round(float(means[i]), 4), "max_score": round(float(maxima[i]), 4)}
            for rank, i in enumerate(order)]


#: Above the refusal bounds of `RegistrationConfig` but below these, a scan is segmented with a
#: QC warning: look at the registration in the report before trusting the mask.
WARN_BRAIN_DICE, WARN_COVERAGE = 0.88, 0.97


def registration_warnings(quality: dict) -> list[str]:
    warnings = []
    if quality["brain_dice"] < WARN_BRAIN_DICE:
        warnings.append(f"registration: brain overlap {quality['brain_dice']:.2f} is low "
                        f"(below {WARN_BRAIN_DICE}); check the outline in report.html")
    if quality["coverage"] < WARN_COVERAGE:
        warnings.append(f"registration: {100 * (1 - quality['coverage']):.0f} % of the brain "
                        "lies outside the scan's field of view; lesions there are not found")
    return warnings


def example_scan(folder: Path, seed: int = 7, resolution: int = 1) -> tuple[Path, Path]:
    """A raw-like example FLAIR the package makes itself: a synthetic lesioned FLAIR (heavy
    lesion load; 1 mm, or 2 mm for quick tests) resampled onto a tilted (12 and 5 degrees),
    anisotropic (0.9 x 0.9 x 3 mm; doubled at 2 mm) scanner grid, in scanner-like units; and
    its lesions on that grid."""
    from brainuad.register import affine_transform, from_sitk, resample
    from brainuad.synth import LOADS, SynthConfig, atlas, make_subject

    cfg = SynthConfig(resolution=resolution, seed=seed, **LOADS[1])
    volumes = make_subject(cfg, 0, lesioned=True)
    affine = atlas(resolution)["affine"]
    angle_x, angle_z = np.deg2rad(12), np.deg2rad(5)
    rotation = (np.array([[1, 0, 0], [0, np.cos(angle_x), -np.sin(angle_x)],
                          [0, np.sin(angle_x), np.cos(angle_x)]])
                @ np.array([[np.cos(angle_z), -np.sin(angle_z), 0],
                            [np.sin(angle_z), np.cos(angle_z), 0], [0, 0, 1]]))
    spacing = np.array([0.9, 0.9, 3.0]) * resolution
    shape = np.array([230, 256, 56]) // resolution
    raw_affine = np.eye(4)
    raw_affine[:3, :3] = rotation * spacing
    raw_affine[:3, 3] = -raw_affine[:3, :3] @ (shape / 2) + [0, -18, 18]
    grid = to_sitk(np.zeros(shape, np.float32), raw_affine)
    identity = affine_transform(np.eye(4))
    image = from_sitk(resample(to_sitk(volumes["image"], affine), grid, identity))[0]
    label = from_sitk(resample(to_sitk(volumes["label"].astype(np.float32), affine), grid,
                               identity, nearest=True))[0]
    scan = save_volume(folder / "example_flair.nii.gz", np.round(image).clip(0, 65535),
                       raw_affine, np.uint16)
    truth = save_volume(folder / "example_lesions.nii.gz", label > 0.5, raw_affine, np.uint8)
    return scan, truth


def load_truth(path: Path, like: Volume) -> np.ndarray:
    from brainuad.io import load_binary

    return load_binary(path, like, "label").data > 0
