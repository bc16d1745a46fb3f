"""`brainuad segment`: a raw scan in, a lesion mask out, with a model that ships inside the
package (or any run directory): no cohort, no training.

Per scan (a FLAIR as it leaves the scanner: NIfTI, or a folder of DICOM: its one series or
its FLAIR), the preprocessing of `preprocess` runs in memory (N4, registration to MNI152 checked for
plausibility, the scan's contrast checked to be the model's, the scan's own brain mask from
deepbet or the template's, CurvatureFlow, [0, 1] scaling), the model scores it and its
threshold cuts the mask, and everything is written on the scan's own grid:

    OUT/<scan>/lesion_mask.nii.gz    0/1
    OUT/<scan>/anomaly_score.nii.gz  the filtered score
    OUT/<scan>/brain_mask.nii.gz     the brain that was scored
    OUT/<scan>/lesions.csv           one row per connected lesion: ml, centroid (scanner mm),
                                     mean and max score
    OUT/<scan>/summary.json          counts, volume, model, threshold, registration, seconds
    OUT/<scan>/report.html           a QC page that opens offline (a slice viewer, a panel per
                                     lesion)
    OUT/<scan>/lesion_seg.dcm        for a DICOM series: the mask as a DICOM Segmentation on it
    OUT/summary.csv                  one row per scan

A scan's folder is written whole under a temporary name and renamed when complete, so it is
always the old complete output or the new one. `summary.json` records what made it (the scan's
content hash, the model's name, version and file hashes, every setting that changes a result,
brainuad's version): a rerun skips a scan made with what would make it now and redoes any other,
saying which setting changed (`io/provenance.py`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainuad import __version__
from brainuad.config import DetectConfig
from brainuad.detection.detector import Detector
from brainuad.errors import BrainUADError, Failed, attempt, raise_failures
from brainuad.io.dicom_seg import Segment, dicom_outputs
from brainuad.io.files import atomic_folder, write_csv, write_text
from brainuad.io.images import (
    Volume,
    check_scan,
    chosen_series,
    load_scan,
    save_volume,
    series_in,
)
from brainuad.io.provenance import KEY, model_record, record, reuse
from brainuad.io.scans import find_scans
from brainuad.io.sitk import to_sitk
from brainuad.models.bundled import DEFAULT
from brainuad.models.folder import INFO as MODEL_INFO
from brainuad.preprocessing.atlas import grid_resolution
from brainuad.preprocessing.morphology import components
from brainuad.preprocessing.normal_sites import lesion_sites, normal_sites
from brainuad.preprocessing.pipeline import PreprocessConfig, Registered, prepare_scan
from brainuad.preprocessing.registration import RegistrationConfig
from brainuad.preprocessing.registration_gate import quality_warnings
from brainuad.preprocessing.transforms import maps_to_native
from brainuad.reporting.html import segment_report
from brainuad.runtime.clock import Stopwatch, stamp
from brainuad.runtime.progress import Stages, note, track
from brainuad.scoring.postprocess import LESION_COLUMNS as COMPONENT_COLUMNS
from brainuad.scoring.postprocess import numbered_lesions

SUMMARY = "summary.json"  # the scan's figures and what made its outputs
STAGES = ("read", "preprocess", "score", "lesions", "to scan grid", "write", "report")
#: the mask of what `detect.normal_sites` "remove" left out of lesion_mask.nii.gz
REMOVED = "normal_sites_removed.nii.gz"


#: lesions.csv's columns: the component table's, and the normal-variant site it lies in
LESION_COLUMNS = [*COMPONENT_COLUMNS, "site"]


#: each model kind's algorithm family (DICOM CID 7162) in its DICOM SEG: the networks' is
#: "ArtificialIntelligence"
FAMILY = {"tissue": "NeighborhoodAnalysis", "normative": "NeighborhoodAnalysis",
          "threshold": "HistogramAnalysis"}


@dataclass(frozen=True)
class SegmentOptions:
    """Which model (a bundled model's name or a run directory), where its networks run, the
    threshold (`flag_fraction`: the one flagging that fraction of the scored voxels of its
    calibration scans, instead of its validation operating point), and whether a failed scan
    stops the others."""

    model: str | Path = DEFAULT
    accelerator: str = "auto"
    flag_fraction: float | None = None
    keep_going: bool = False
    #: "refuse" a scan whose registration is broken (two figures out of bound, or one far
    #: out), warn for a doubtful one; "warn": go on with both, the figures in the outputs
    qc: str = "refuse"
    #: "scan": the brain outlined in the scan itself (deepbet), the template's as the fallback;
    #: "template": the MNI152 mask carried over by the registration (skips deepbet)
    brain_mask: str = "scan"
    preprocess: PreprocessConfig | None = None  # None: the defaults, on the model's modality
    force: bool = False  # redo scans done before, even with the same settings
    #: the report's viewer shows the whole field of view (face included), not the brain
    report_full_fov: bool = False
    #: in a DICOM folder of several series, the one to read (SeriesInstanceUID); else its
    #: FLAIR (`io.images.chosen_series`)
    series: str | None = None
    #: "flag" or "remove" lesions at normal bright places (`DetectConfig.normal_sites`); None:
    #: the model's own setting
    normal_sites: str | None = None


@dataclass
class _Job:
    """What every scan of one `segment_scans` call shares."""

    detector: Detector
    detect: DetectConfig
    threshold: float
    rule: str
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    force: bool = False
    report_full_fov: bool = False
    series: str | None = None

    def made_by(self, path: Path) -> dict:
        """The record of a scan's outputs (`io/provenance.py`): what would make them now."""
        info = self.detector.model_info
        model = (model_record(info.name, info.version, self.detector.folder,
                              [MODEL_INFO, *info.files]) if info is not None else None)
        settings = {"threshold": self.threshold, "rule": self.rule,
                    "precision": self.detector.precision(self.detect),
                    "detect": dataclasses.asdict(self.detect),
                    "preprocess": dataclasses.asdict(self.preprocess),
                    "report_full_fov": self.report_full_fov, "series": self.series,
                    # outputs made before the table had these columns are made again
                    "lesion_columns": LESION_COLUMNS}
        return record({"scan": path}, json.loads(json.dumps(settings)), model)


def segment_scans(sources: list[str | Path], out: str | Path,
                  options: SegmentOptions | None = None) -> list[dict]:
    """Segment every scan of `sources` into `out/<scan>/` and write `out/summary.csv`. Scans
    already done are skipped; every scan's header is checked before any work."""
    stamp("work")
    options = options or SegmentOptions()
    out = Path(out)
    job = make_job(options)
    scans = find_scans(sources, job.detector.cfg.train.modality)
    if not scans:
        raise BrainUADError("no scans given")
    checked = [attempt(options.keep_going, check_scan, path, options.series)
               for _, path in scans]
    results = [check if isinstance(check, Failed) else
               attempt(options.keep_going, segment_scan, path, out / name, job)
               for (name, path), check in track(list(zip(scans, checked, strict=True)),
                                                "segment", unit="scan")]
    rows = [{"scan": name, "path": str(path), "error": result.reason}
            if isinstance(result, Failed) else _row(result)
            for (name, path), result in zip(scans, results, strict=True)]
    write_csv(out / "summary.csv", rows)
    raise_failures([name for name, _ in scans], results, "segment")
    return rows


def make_job(options: SegmentOptions) -> _Job:
    """The model loaded once, its settings and threshold: what every scan of a call shares."""
    detector = Detector.load(options.model, options.accelerator)
    modality = detector.cfg.train.modality
    detect = detector.settings(normal_sites=options.normal_sites)
    return _Job(detector, detect, detector.threshold(detect, options.flag_fraction),
                detector.rule(detect, options.flag_fraction),
                options.preprocess or PreprocessConfig(
                    reference=modality, brain_mask=options.brain_mask,
                    registration=RegistrationConfig(qc=options.qc)), options.force,
                options.report_full_fov, options.series)


def _row(summary: dict) -> dict:
    quality = summary.get("registration", {})
    return {"scan": summary["scan"], "path": summary["input"], "lesions": summary["lesions"],
            "lesion_volume_ml": summary["lesion_volume_ml"],
            # components left out at normal bright places ("" where not looked for)
            "removed_at_normal_sites": ((summary.get("at_normal_variant_sites") or {}).get(
                "removed") or {}).get("lesions", ""),
            "brain_volume_ml": summary["brain_volume_ml"], "threshold": summary["threshold"],
            **{f"registration_{k}": v for k, v in quality.items()},
            "brain_mask": summary.get("brain_mask", {}).get("source", ""),
            "warnings": "; ".join(summary["warnings"]), "seconds": summary["seconds"]["total"],
            "error": ""}


def segment_scan(path: Path, folder: Path, job: _Job) -> dict:
    """One scan's outputs in `folder`; its summary (read back where the scan was done before
    with what would make it now)."""
    made = job.made_by(path)
    kept, said = reuse(folder / SUMMARY, made, job.force)
    if said:
        note(f"{folder.name}: {said}")
    if kept is not None:
        return kept
    with atomic_folder(folder) as work:
        summary = _segment(path, work, folder.name, job)
        summary[KEY] = made
        write_text(work / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class Found:
    """What a scan's lesions were found from and on: the scan as read, the maps on its grid
    (`score`, `lesions`, `brain`) and the registration (figures, brain outline, the scan on
    the template grid for the report)."""

    raw: Volume
    native: dict[str, np.ndarray]
    registration: Registered
    #: components left out at normal bright places, counted on the grid they were judged on
    #: (None: not looked for)
    removed: int | None = None


def find_lesions(path: Path, job: _Job, lap) -> Found:
    """The heavy part: read, preprocess, score, threshold, maps back on the scan's grid
    (`lap(stage)` after each)."""
    detector, detect = job.detector, job.detect
    raw = load_scan(path, job.series)
    lap("read")
    image, mask, registration = prepare_scan(raw, job.preprocess,
                                             detector.cfg.train.modality)
    lap("preprocess")
    scored = detector.score(image, mask, detect)
    lap("score")
    lesions, removed = detector.segment(scored, job.threshold, detect, image.affine)
    lap("lesions")
    resolution = grid_resolution(image.shape, image.affine)
    sites = {"sites": normal_sites(resolution)} if resolution else {}
    left_out = {} if removed is None else {"removed": removed}
    count = None if removed is None else components(removed, full=True)[1]
    native = maps_to_native({"score": scored.score, "lesions": lesions, "brain": mask.data,
                             **sites, **left_out}, image.affine, to_sitk(raw.data, raw.affine),
                            registration.transform)
    for name in ("lesions", "brain", *left_out):
        native[name] = native[name] > 0.5
    lap("to scan grid")
    return Found(raw, native, registration, count)


def _at_sites(kept: list[dict], removed: np.ndarray | None, count: int | None,
              voxel_ml: float) -> dict:
    """What lies at a healthy FLAIR's normal bright places: the lesions kept there (flagged in
    lesions.csv) and, where the model's `detect.normal_sites` removes them, what it left out of
    the mask and the totals (null where it keeps them): `count` components as judged on the
    model's grid, their ml on the scan's (`removed`)."""
    out = {"lesions": len(kept),
           "volume_ml": round(float(sum(row["volume_ml"] for row in kept)), 4), "removed": None}
    if removed is not None:
        out["removed"] = {"lesions": count, "volume_ml": round(float(removed.sum() * voxel_ml), 4)}
    return out


def _series_said(path: Path, name: str, series: str | None) -> dict:
    """Which DICOM series of the folder was read (said on the terminal where it held
    several)."""
    found = series_in(path)
    chosen = chosen_series(path, series)
    if len(found) > 1:
        note(f"{name}: read the series {chosen} of the {len(found)} in {path}")
    return {"uid": chosen.uid, "description": chosen.description, "files": len(chosen.files),
            "frames": chosen.frames if chosen.enhanced else len(chosen.files)}


def _segment(path: Path, folder: Path, name: str, job: _Job) -> dict:
    """The outputs of scan `name` written into `folder`; its summary."""
    clock, stages = Stopwatch(), Stages(name, len(STAGES))
    start = time.perf_counter()

    def lap(name: str) -> None:
        clock.lap(name)
        stages.done(name)

    found = find_lesions(path, job, lap)
    raw, native, registration = found.raw, found.native, found.registration
    table, numbered = numbered_lesions(native["lesions"], native["score"], raw.affine)
    sites = (lesion_sites(numbered, native["sites"], len(table)) if "sites" in native
             else [""] * len(table))
    for row, site in zip(table, sites, strict=True):
        row["site"] = site  # the normal-variant site it lies at, or ""
    at_sites = [row for row in table if row["site"]]
    voxel_ml = float(abs(np.linalg.det(raw.affine[:3, :3]))) / 1000
    save_volume(folder / "anomaly_score.nii.gz", native["score"], raw.affine, np.float32)
    save_volume(folder / "brain_mask.nii.gz", native["brain"], raw.affine, np.uint8)
    save_volume(folder / "lesion_mask.nii.gz", native["lesions"], raw.affine, np.uint8)
    removed = [REMOVED] if "removed" in native else []  # what left the mask, to look at
    if removed:
        save_volume(folder / REMOVED, native["removed"], raw.affine, np.uint8)
    write_csv(folder / "lesions.csv", table, LESION_COLUMNS)
    model = job.detector.model_info
    dicom = dicom_outputs(path, folder / "lesion_seg.dcm", native["lesions"].astype(np.uint8),
                          raw.affine, [Segment(1, "lesion")],
                          (f"brainuad {model.name}", str(model.version)),
                          FAMILY.get(model.kind, "ArtificialIntelligence"),
                          f"brainuad {model.name} lesions", series=job.series)
    lap("write")
    summary = {
        "scan": name, "input": str(path), "brainuad": __version__,
        "model": {"name": model.name, "version": model.version, "kind": model.kind,
                  "folder": str(job.detector.folder)},
        "threshold": job.threshold, "rule": job.rule, "lesions": len(table),
        "lesion_volume_ml": float(native["lesions"].sum() * voxel_ml),
        # null where the model's grid is not the template's (no sites to look at)
        "at_normal_variant_sites": _at_sites(at_sites, native.get("removed"), found.removed,
                                             voxel_ml)
        if "sites" in native else None,
        "brain_volume_ml": float(native["brain"].sum() * voxel_ml),
        "registration": registration.quality,
        "brain_mask": registration.brain.to_dict(),
        "warnings": quality_warnings(registration.quality, job.preprocess.registration)
        + ([registration.brain.reason] if registration.brain.reason else []) + dicom["warnings"],
        "grid": {"shape": list(raw.shape), "spacing_mm": raw.spacing.round(4).tolist()},
        **({"dicom_series": _series_said(path, name, job.series)} if path.is_dir() else {}),
        "outputs": ["lesion_mask.nii.gz", "anomaly_score.nii.gz", "brain_mask.nii.gz",
                    "lesions.csv", "report.html", *removed, *dicom["outputs"]],
    }
    segment_report(folder / "report.html", summary, raw, native,
                   registration.images[job.detector.cfg.train.modality], table, numbered,
                   job.report_full_fov)
    lap("report")
    summary["seconds"] = clock.seconds(start)
    summary["preprocess_seconds"] = {k: round(v, 3) for k, v in registration.seconds.items()}
    stages.close()
    return summary
