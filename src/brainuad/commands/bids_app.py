"""brainuad as a BIDS App: `brainuad bids BIDS_DIR OUT_DIR participant|group`.

participant: every FLAIR of the study (found by pybids), or of the labels asked for, is
segmented, and every consecutive pair of a subject's sessions compared, into BIDS derivatives:

    OUT/dataset_description.json, README, .bidsignore
    OUT/sub-X/[ses-Y/]anat/<entities>_space-orig_desc-lesion_mask.nii.gz   (+ .json sidecar)
                           <entities>_space-orig_desc-brain_mask.nii.gz    (+ .json)
                           <entities>_space-orig_desc-anomaly_score.nii.gz (+ .json)
                           <entities>_desc-lesion_lesions.tsv, <entities>_desc-lesion_report.html
    at the later session of each pair:
                           <entities>_space-orig_desc-change_mask.nii.gz   (+ .json)
                           <entities>_space-orig_desc-change_score.nii.gz  (+ .json)
                           <entities>_desc-change_changes.tsv, <entities>_desc-change_report.html

`<entities>` are the source file's (sub, ses, acq, run, ...). A mask's sidecar holds its
sources, the threshold and its rule, the registration figures and the warnings; the lesion
mask's sidecar is written last, so a scan whose sidecar exists is done (skipped on a rerun).
Files BIDS has no suffix for (scores, tables, reports) are listed in `.bidsignore`.

group: `OUT/lesions.tsv` (a row per scan, with its changes since the previous session) and
`OUT/index.html` (every report linked, lesion volume per subject over sessions).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from brainuad import __version__
from brainuad.commands.compare import CompareOptions, compare_pair
from brainuad.commands.segment import SegmentOptions, make_job, segment_scan
from brainuad.errors import BrainUADError, Failed, attempt, raise_failures
from brainuad.io.files import write_text
from brainuad.io.images import check_scan
from brainuad.io.manifest import shard
from brainuad.reporting.html import cohort_index
from brainuad.runtime.progress import track

RAW = "raw"  # the source dataset's name in BIDS URIs (`DatasetLinks`)
#: BIDS suffixes of the modality a model reads
SUFFIXES = {"flair": "FLAIR", "t2": "T2w", "t1": "T1w"}
BIDSIGNORE = ["*_desc-anomaly_score.*", "*_desc-change_score.*", "*_desc-change_mask.*",
              "*_lesions.tsv", "*_changes.tsv", "*_report.html", "/lesions.tsv", "/index.html",
              "/.work/"]


@dataclass(frozen=True)
class BidsOptions:
    """Which scans (participant and session labels, without `sub-`/`ses-`; None: all), a
    shard `i/n` of the subjects, and how to segment and compare them."""

    participants: list[str] | None = None
    sessions: list[str] | None = None
    shard: str | None = None
    segment: SegmentOptions = field(default_factory=SegmentOptions)
    compare: CompareOptions = field(default_factory=CompareOptions)


@dataclass(frozen=True)
class Scan:
    path: Path
    subject: str
    session: str | None

    @property
    def prefix(self) -> str:
        """The source file's name without its suffix and extension: its BIDS entities."""
        return self.path.name.split(".")[0].rsplit("_", 1)[0]

    @property
    def folder(self) -> Path:
        return Path(f"sub-{self.subject}") / (f"ses-{self.session}" if self.session else "") / \
            "anat"

    @property
    def relative(self) -> str:
        return str(self.folder / self.path.name)


def find_scans(bids_dir: Path, modality: str, options: BidsOptions) -> list[Scan]:
    """Every scan of `modality` in the study (pybids), of the labels asked for; one per
    session unless `run-` tells them apart."""
    from bids import BIDSLayout
    from bids.exceptions import BIDSValidationError

    if not (bids_dir / "dataset_description.json").is_file():
        raise BrainUADError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    try:
        layout = BIDSLayout(bids_dir, validate=False)
    except (BIDSValidationError, ValueError, OSError) as err:
        raise BrainUADError(f"{bids_dir}: not a BIDS dataset ({err})") from err
    suffix = SUFFIXES[modality]
    query = {"suffix": suffix, "datatype": "anat", "extension": [".nii", ".nii.gz"]}
    if options.participants:
        query["subject"] = [label.removeprefix("sub-") for label in options.participants]
    if options.sessions:
        query["session"] = [label.removeprefix("ses-") for label in options.sessions]
    files = layout.get(return_type="object", **query)
    for label in query.get("subject", []):
        if not any(f.entities["subject"] == label for f in files):
            raise BrainUADError(f"{bids_dir}: no {suffix} found for participant {label}")
    scans, seen = [], {}
    for f in sorted(files, key=lambda f: f.path):
        scan = Scan(Path(f.path), f.entities["subject"], f.entities.get("session"))
        key = (scan.subject, scan.session)
        if key in seen and "run" not in f.entities:
            raise BrainUADError(f"{scan.path}: a second {suffix} of sub-{scan.subject}"
                                f"{' ses-' + scan.session if scan.session else ''} (with "
                                f"{seen[key].name}) and no run- entity to tell them apart")
        seen[key] = scan.path
        scans.append(scan)
    if not scans:
        raise BrainUADError(f"{bids_dir}: no {suffix} scan found"
                            + (" for the labels given" if len(query) > 3 else ""))
    return scans


def _shard(scans: list[Scan], spec: str | None) -> list[Scan]:
    """Shard `i/n` of the subjects (all of a subject's sessions in one shard, so its pairs
    can be compared)."""
    if spec is None:
        return scans
    chosen = set(shard(sorted({s.subject for s in scans}), spec, "the BIDS study"))
    return [s for s in scans if s.subject in chosen]


def pairs_of(scans: list[Scan]) -> list[tuple[Scan, Scan]]:
    """Consecutive sessions of each subject (the first scan of a session where runs differ)."""
    first: dict[tuple[str, str], Scan] = {}
    for scan in scans:
        if scan.session is not None:
            first.setdefault((scan.subject, scan.session), scan)
    by_subject: dict[str, list[Scan]] = {}
    for (subject, _), scan in sorted(first.items()):
        by_subject.setdefault(subject, []).append(scan)
    return [(a, b) for visits in by_subject.values()
            for a, b in zip(visits, visits[1:], strict=False)]


def write_description(out: Path, bids_dir: Path, model: dict) -> None:
    """dataset_description.json (a derivative: brainuad and its model), README, .bidsignore."""
    description = {
        "Name": f"brainuad lesion segmentation of {bids_dir.name}",
        "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "brainuad", "Version": __version__,
                         "Description": f"model {model['name']} version {model['version']} "
                                        f"({model['kind']})"}],
        "SourceDatasets": [{"URL": bids_dir.resolve().as_uri()}],
        "DatasetLinks": {RAW: bids_dir.resolve().as_uri()}}
    write_text(out / "dataset_description.json", json.dumps(description, indent=2) + "\n")
    write_text(out / "README", f"Lesion masks, anomaly scores and changes between sessions of "
               f"{bids_dir.name}, made by brainuad {__version__} (`brainuad bids`). For "
               f"research; not a clinical device.\n")
    write_text(out / ".bidsignore", "\n".join(BIDSIGNORE) + "\n")


def _tsv(rows_csv: Path, target: Path) -> None:
    import csv

    rows = list(csv.reader(rows_csv.read_text().splitlines()))
    write_text(target, "".join("\t".join(cell if cell != "" else "n/a" for cell in row) + "\n"
                               for row in rows))


def _sidecar(path: Path, values: dict) -> None:
    write_text(path, json.dumps(values, indent=2) + "\n")


def segment_one(scan: Scan, out: Path, job) -> dict:
    """One scan's derivatives; its lesion sidecar (read back where it was done before)."""
    folder = out / scan.folder
    lesion_json = folder / f"{scan.prefix}_space-orig_desc-lesion_mask.json"
    if lesion_json.is_file():
        return json.loads(lesion_json.read_text())
    work = out / ".work" / scan.prefix
    summary = segment_scan(scan.path, work, job)
    source = f"bids:{RAW}:{scan.relative}"
    common = {"Sources": [source], "SpatialReference": source}
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{scan.prefix}_space-orig_desc"
    for made, target, values in (
            ("brain_mask.nii.gz", f"{name}-brain_mask",
             {"Type": "Brain", "Description": "the brain that was scored (its outline: "
              f"{summary['brain_mask']['source']})"}),
            ("anomaly_score.nii.gz", f"{name}-anomaly_score",
             {"Description": f"the model's anomaly score ({summary['model']['kind']}), "
              "filtered; a lesion is what is above the threshold of the lesion mask"})):
        os.replace(work / made, folder / f"{target}.nii.gz")
        _sidecar(folder / f"{target}.json", {**common, **values})
    _tsv(work / "lesions.csv", folder / f"{scan.prefix}_desc-lesion_lesions.tsv")
    os.replace(work / "report.html", folder / f"{scan.prefix}_desc-lesion_report.html")
    os.replace(work / "lesion_mask.nii.gz", folder / f"{name}-lesion_mask.nii.gz")
    sidecar = {**common, "Type": "Lesion",
               "Description": "lesions: connected components of the anomaly score above the "
                              "threshold",
               "subject": scan.subject, "session": scan.session,
               **{k: summary[k] for k in ("threshold", "rule", "lesions", "lesion_volume_ml",
                                          "brain_volume_ml", "registration", "warnings",
                                          "model", "seconds")},
               "brainuad": __version__}
    sidecar["model"] = {k: v for k, v in sidecar["model"].items() if k != "folder"}
    _sidecar(lesion_json, sidecar)  # last: the scan is done
    shutil.rmtree(work, ignore_errors=True)
    return sidecar


def compare_one(baseline: Scan, followup: Scan, out: Path, options: CompareOptions,
                ) -> dict:
    """One pair's change derivatives at the follow-up session; its change sidecar."""
    folder = out / followup.folder
    name = f"{followup.prefix}_space-orig_desc"
    change_json = folder / f"{name}-change_mask.json"
    if change_json.is_file():
        return json.loads(change_json.read_text())
    work = out / ".work" / f"{followup.prefix}_change"
    summary = compare_pair(baseline.path, followup.path, work, options)
    sources = [f"bids:{RAW}:{baseline.relative}", f"bids:{RAW}:{followup.relative}"]
    common = {"Sources": sources, "SpatialReference": sources[1]}
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(work / "change_score.nii.gz", folder / f"{name}-change_score.nii.gz")
    _sidecar(folder / f"{name}-change_score.json",
             {**common, "Description": "the follow-up against the baseline, in spreads of the "
                                       "noise of their difference"})
    _tsv(work / "changes.csv", folder / f"{followup.prefix}_desc-change_changes.tsv")
    os.replace(work / "report.html", folder / f"{followup.prefix}_desc-change_report.html")
    os.replace(work / "change_mask.nii.gz", folder / f"{name}-change_mask.nii.gz")
    sidecar = {**common, "Description": "1: new or enlarging lesion, 2: shrinking or "
                                        "resolving, since the baseline session",
               "subject": followup.subject, "session": followup.session,
               "baseline_session": baseline.session,
               **{k: summary[k] for k in ("changes", "registration", "noise", "settings",
                                          "warnings", "seconds")},
               "brainuad": __version__}
    _sidecar(change_json, sidecar)  # last: the pair is done
    shutil.rmtree(work, ignore_errors=True)
    return sidecar


def participant(bids_dir: str | Path, out: str | Path,
                options: BidsOptions | None = None) -> list[dict]:
    """Segment every scan and compare every consecutive pair of sessions (of the labels and
    shard asked for) into BIDS derivatives under `out`; a sidecar per scan and pair."""
    options = options or BidsOptions()
    bids_dir, out = Path(bids_dir), Path(out)
    job = make_job(options.segment)
    scans = _shard(find_scans(bids_dir, job.detector.cfg.train.modality, options),
                   options.shard)
    keep_going = options.segment.keep_going
    checked = [attempt(keep_going, check_scan, scan.path) for scan in scans]
    info = job.detector.model_info
    write_description(out, bids_dir, {"name": info.name, "version": info.version,
                                      "kind": info.kind})
    names = [scan.prefix for scan in scans]
    results = [check if isinstance(check, Failed) else
               attempt(keep_going, segment_one, scan, out, job)
               for scan, check in track(list(zip(scans, checked, strict=True)), "segment",
                                        unit="scan")]
    failed = {scan.path for scan, r in zip(scans, results, strict=True)
              if isinstance(r, Failed)}
    pairs = [(a, b) for a, b in pairs_of(scans) if not {a.path, b.path} & failed]
    compare = CompareOptions(options.compare.change, options.compare.preprocess, keep_going)
    changes = [attempt(keep_going, compare_one, a, b, out, compare)
               for a, b in track(pairs, "compare", unit="pair")]
    names += [f"{b.prefix} (since ses-{a.session})" for a, b in pairs]
    raise_failures(names, results + changes, "bids participant")
    return [r for r in results + changes if not isinstance(r, Failed)]


#: the group table's columns: a scan, then its changes since the previous session
GROUP_COLUMNS = ["subject", "session", "scan", "lesions", "lesion_volume_ml",
                 "brain_volume_ml", "registration_brain_dice", "registration_coverage",
                 "registration_scale", "registration_metric", "warnings", "baseline_session",
                 "new_count", "new_ml", "enlarging_count", "enlarging_ml", "shrinking_count",
                 "shrinking_ml", "report", "change_report"]


def group(out: str | Path) -> list[dict]:
    """`out/lesions.tsv` (a row per scan of the participant step) and `out/index.html`."""
    out = Path(out)
    found = sorted(out.glob("sub-*/**/anat/*_space-orig_desc-lesion_mask.json"))
    if not found:
        raise BrainUADError(f"{out}: no segmented scan (run the participant step first)")
    rows = []
    for sidecar in found:
        scan = json.loads(sidecar.read_text())
        prefix = sidecar.name.removesuffix("_space-orig_desc-lesion_mask.json")
        change_json = sidecar.with_name(f"{prefix}_space-orig_desc-change_mask.json")
        change = json.loads(change_json.read_text()) if change_json.is_file() else {}
        counts = change.get("changes", {})
        shrinking = counts.get("shrinking or resolving", {})
        quality = scan.get("registration", {})
        report = sidecar.with_name(f"{prefix}_desc-lesion_report.html")
        change_report = sidecar.with_name(f"{prefix}_desc-change_report.html")
        rows.append({
            "subject": scan["subject"], "session": scan.get("session") or "n/a",
            "scan": prefix, "lesions": scan["lesions"],
            "lesion_volume_ml": round(scan["lesion_volume_ml"], 4),
            "brain_volume_ml": round(scan["brain_volume_ml"], 1),
            **{f"registration_{k}": round(quality[k], 4) if k in quality else "n/a"
               for k in ("brain_dice", "coverage", "scale", "metric")},
            "warnings": "; ".join(scan.get("warnings", [])) or "n/a",
            "baseline_session": change.get("baseline_session") or "n/a",
            **{f"{key}_{unit}": counts[kind][unit] if kind in counts else "n/a"
               for key, kind in (("new", "new"), ("enlarging", "enlarging"))
               for unit in ("count", "ml")},
            "shrinking_count": shrinking.get("count", "n/a"),
            "shrinking_ml": shrinking.get("ml", "n/a"),
            "report": str(report.relative_to(out)),
            "change_report": str(change_report.relative_to(out)) if change else "n/a"})
    lines = ["\t".join(GROUP_COLUMNS)] + ["\t".join(str(row[c]) for c in GROUP_COLUMNS)
                                          for row in rows]
    write_text(out / "lesions.tsv", "\n".join(lines) + "\n")
    cohort_index(out / "index.html", rows)
    return rows
