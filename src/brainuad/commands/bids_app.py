"""brainuad as a BIDS App: `brainuad bids BIDS_DIR OUT_DIR participant|group`.

participant: every FLAIR of the study (found by pybids), or of the labels asked for, is
segmented, and every consecutive pair of a subject's sessions compared, into BIDS derivatives:

    OUT/dataset_description.json, README, .bidsignore
    OUT/sub-X/[ses-Y/]anat/<entities>_space-orig_desc-lesion_mask.nii.gz   (+ .json sidecar)
                           <entities>_space-orig_desc-brain_mask.nii.gz    (+ .json)
                           <entities>_space-orig_desc-anomaly_score.nii.gz (+ .json)
                           <entities>_desc-lesion_lesions.tsv, <entities>_desc-lesion_report.html
    at the later session of each pair:
                           <entities>_space-orig_desc-change_dseg.nii.gz   (+ .json, + .tsv)
                           <entities>_space-orig_desc-change_score.nii.gz  (+ .json)
                           <entities>_desc-change_changes.tsv, <entities>_desc-change_report.html

`<entities>` are the source file's (sub, ses, acq, run, ...). A mask's sidecar holds its
sources, the threshold and its rule, the registration figures and the warnings, and what made
it (`made_by`: the scan's content hash, the model and its files' hashes, every setting that
changes a result); the lesion mask's sidecar is written last, so a rerun skips a scan whose
sidecar says it was made with what would make it now, and redoes any other. The outputs are
copied out of a work folder (`OUT/.work/`) that survives a killed run, so a rerun completes it.
Files BIDS has no suffix for (scores, tables, reports) are listed in `.bidsignore`.

A subject's sessions are compared in time order (`io/visits.py`): `acq_time` of
`sub-X_sessions.tsv` (or of the scan's row in `scans.tsv`), else the labels' numbers or dates;
a subject whose order cannot be told (`ses-pre`, `ses-post` and no times) gets no pairs, with a
line naming it, unless `--session-order pre,post` states it. Change outputs at a session that is
no longer a follow-up (a session added or times given since) are removed.

group: `OUT/lesions.tsv` (a row per scan, with its changes since the previous session) and
`OUT/index.html` (every report linked, lesion volume per subject over sessions).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from brainuad import __version__
from brainuad.commands.compare import CompareOptions, compare_pair, detector_config
from brainuad.commands.compare import made_by as pair_made_by
from brainuad.commands.segment import REMOVED, SegmentOptions, make_job, segment_scan
from brainuad.errors import BrainUADError, Failed, attempt, raise_failures
from brainuad.io.files import atomic_path, write_text
from brainuad.io.images import check_scan
from brainuad.io.manifest import shard
from brainuad.io.provenance import KEY, reuse
from brainuad.io.visits import Order, UnorderedVisits, parse_time, visit_order
from brainuad.reporting.html import cohort_index
from brainuad.runtime.progress import note, track

RAW = "raw"  # the source dataset's name in BIDS URIs (`DatasetLinks`)
#: BIDS suffixes of the modality a model reads
SUFFIXES = {"flair": "FLAIR", "t2": "T2w", "t1": "T1w"}
BIDSIGNORE = ["*_desc-anomaly_score.*", "*_desc-change_score.*",
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
    #: session labels in time order, for subjects whose order times and labels cannot tell
    session_order: list[str] | None = None


@dataclass(frozen=True)
class Scan:
    path: Path
    subject: str
    session: str | None
    acq_time: datetime | None = None  # of its session (sessions.tsv) or itself (scans.tsv)

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
    times = acquisition_times(layout, bids_dir)
    scans, seen = [], {}
    for f in sorted(files, key=lambda f: f.path):
        subject, session = f.entities["subject"], f.entities.get("session")
        scan = Scan(Path(f.path), subject, session,
                    times.get((subject, session)) or times.get(Path(f.path).resolve()))
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


def acquisition_times(layout, bids_dir: Path) -> dict:
    """`acq_time` of every session (`sub-X_sessions.tsv`: (subject, session) -> time) and of
    every scan listed in a `scans.tsv` (its resolved path -> time)."""
    times: dict = {}
    for table in layout.get(suffix=["sessions", "scans"], extension=".tsv"):
        rows = table.get_df().to_dict("records")
        subject = table.entities.get("subject")
        for row in rows:
            if "acq_time" not in row:
                break
            try:
                when = parse_time(str(row["acq_time"]) if row["acq_time"] == row["acq_time"]
                                  else "")
            except BrainUADError as err:
                raise BrainUADError(f"{table.path}: {err}") from None
            if table.entities["suffix"] == "sessions":
                times[(subject, str(row.get("session_id", "")).removeprefix("ses-"))] = when
            else:
                times[(Path(table.path).parent / str(row.get("filename", ""))).resolve()] = when
    return times


@dataclass(frozen=True)
class Pair:
    baseline: Scan
    followup: Scan
    ordered_by: str  # how the sessions' order was found (`io/visits.py`)


def orders_of(scans: list[Scan], stated: list[str] | None = None) -> dict[str, Order | str]:
    """Each subject's sessions in time order (the first scan of a session where runs differ
    gives its time); for a subject whose order cannot be told, why."""
    first: dict[str, dict[str, Scan]] = {}
    for scan in scans:
        if scan.session is not None:
            first.setdefault(scan.subject, {}).setdefault(scan.session, scan)
    orders: dict[str, Order | str] = {}
    for subject, sessions in first.items():
        try:
            orders[subject] = visit_order(list(sessions),
                                          {k: v.acq_time for k, v in sessions.items()},
                                          stated, f"sub-{subject}")
        except UnorderedVisits as err:
            orders[subject] = str(err)
    return orders


def pairs_of(scans: list[Scan], orders: dict[str, Order | str]) -> list[Pair]:
    """Consecutive sessions of each subject whose order is known."""
    first: dict[tuple[str, str], Scan] = {}
    for scan in scans:
        if scan.session is not None:
            first.setdefault((scan.subject, scan.session), scan)
    return [Pair(first[(subject, a)], first[(subject, b)], order.by)
            for subject, order in orders.items() if isinstance(order, Order)
            for a, b in order.pairs()]


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
    rows = list(csv.reader(rows_csv.read_text().splitlines()))
    write_text(target, "".join("\t".join(cell if cell != "" else "n/a" for cell in row) + "\n"
                               for row in rows))


def _sidecar(path: Path, values: dict) -> None:
    write_text(path, json.dumps(values, indent=2) + "\n")


def _place(made: Path, target: Path) -> None:
    """A work folder's output copied to its BIDS name, atomically (copied, not moved, so a
    run killed halfway through placing them finds the work folder whole)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(made, tmp)


def segment_one(scan: Scan, out: Path, job) -> dict:
    """One scan's derivatives; its lesion sidecar (read back where it was made with what would
    make it now)."""
    folder = out / scan.folder
    lesion_json = folder / f"{scan.prefix}_space-orig_desc-lesion_mask.json"
    work = out / ".work" / scan.prefix
    made = job.made_by(scan.path)
    kept, said = reuse(lesion_json, made, job.force)
    if said:
        note(f"{scan.prefix}: {said}")
    if kept is not None:
        shutil.rmtree(work, ignore_errors=True)  # left by a run killed after the sidecar
        return kept
    lesion_json.unlink(missing_ok=True)  # a redo killed halfway is never taken for done
    summary = segment_scan(scan.path, work, job)  # a whole work folder of a killed run is kept
    source = f"bids:{RAW}:{scan.relative}"
    common = {"Sources": [source], "SpatialReference": source}
    name = f"{scan.prefix}_space-orig_desc"
    for output, target, values in (
            ("brain_mask.nii.gz", f"{name}-brain_mask",
             {"Type": "Brain", "Description": "the brain that was scored (its outline: "
              f"{summary['brain_mask']['source']})"}),
            ("anomaly_score.nii.gz", f"{name}-anomaly_score",
             {"Description": f"the model's anomaly score ({summary['model']['kind']}), "
              "filtered; a lesion is what is above the threshold of the lesion mask"})):
        _place(work / output, folder / f"{target}.nii.gz")
        _sidecar(folder / f"{target}.json", {**common, **values})
    removed = folder / f"{name}-normalsitesremoved_mask"  # what left the lesion mask
    if (work / REMOVED).exists():
        _place(work / REMOVED, removed.with_suffix(".nii.gz"))
        _sidecar(removed.with_suffix(".json"), {
            **common, "Type": "Lesion", "Description": "components the model left out of the "
            "lesion mask: they lie mostly at a healthy FLAIR's normal bright places (ependymal "
            "caps, septum, periaqueductal grey, floor of the fourth ventricle)"})
    else:  # none made this time: none from an earlier run with other settings either
        for suffix in (".nii.gz", ".json"):
            removed.with_suffix(suffix).unlink(missing_ok=True)
    _tsv(work / "lesions.csv", folder / f"{scan.prefix}_desc-lesion_lesions.tsv")
    _place(work / "report.html", folder / f"{scan.prefix}_desc-lesion_report.html")
    _place(work / "lesion_mask.nii.gz", folder / f"{name}-lesion_mask.nii.gz")
    sidecar = {**common, "Type": "Lesion",
               "Description": "lesions: connected components of the anomaly score above the "
                              "threshold",
               "subject": scan.subject, "session": scan.session,
               **{k: summary[k] for k in ("threshold", "rule", "lesions", "lesion_volume_ml",
                                          "at_normal_variant_sites", "brain_volume_ml",
                                          "registration", "warnings", "model", "seconds")},
               "brainuad": __version__, KEY: made}
    sidecar["model"] = {k: v for k, v in sidecar["model"].items() if k != "folder"}
    _sidecar(lesion_json, sidecar)  # last: the scan is done
    shutil.rmtree(work, ignore_errors=True)
    return sidecar


#: what a pair leaves at its follow-up session, after the follow-up's prefix
CHANGE_OUTPUTS = ("_space-orig_desc-change_dseg.nii.gz", "_space-orig_desc-change_dseg.tsv",
                  "_space-orig_desc-change_score.nii.gz", "_space-orig_desc-change_score.json",
                  "_desc-change_changes.tsv", "_desc-change_report.html",
                  "_space-orig_desc-change_dseg.json")
#: the change segmentation's labels (BIDS `dseg.tsv`: index, name)
CHANGE_LABELS = "index\tname\n1\tnew or enlarging lesion\n2\tshrinking or resolving lesion\n"


def compare_one(pair: Pair, out: Path, options: CompareOptions) -> dict:
    """One pair's change derivatives at the follow-up session; its change sidecar (read back
    where it was made with what would make it now)."""
    baseline, followup = pair.baseline, pair.followup
    folder = out / followup.folder
    name = f"{followup.prefix}_space-orig_desc"
    change_json = folder / f"{name}-change_dseg.json"
    work = out / ".work" / f"{followup.prefix}_change"
    made = pair_made_by(baseline.path, followup.path, options)
    kept, said = reuse(change_json, made, options.force)
    if said:
        note(f"{followup.prefix} (since ses-{baseline.session}): {said}")
    if kept is not None:
        shutil.rmtree(work, ignore_errors=True)
        return kept
    change_json.unlink(missing_ok=True)
    summary = compare_pair(baseline.path, followup.path, work, options)
    sources = [f"bids:{RAW}:{baseline.relative}", f"bids:{RAW}:{followup.relative}"]
    common = {"Sources": sources, "SpatialReference": sources[1]}
    _place(work / "change_score.nii.gz", folder / f"{name}-change_score.nii.gz")
    _sidecar(folder / f"{name}-change_score.json",
             {**common, "Description": "the follow-up against the baseline, in spreads of the "
                                       "noise of their difference"})
    _tsv(work / "changes.csv", folder / f"{followup.prefix}_desc-change_changes.tsv")
    _place(work / "report.html", folder / f"{followup.prefix}_desc-change_report.html")
    write_text(folder / f"{name}-change_dseg.tsv", CHANGE_LABELS)
    _place(work / "change_mask.nii.gz", folder / f"{name}-change_dseg.nii.gz")
    sidecar = {**common, "Description": "1: new or enlarging lesion, 2: shrinking or "
                                        "resolving, since the baseline session",
               "subject": followup.subject, "session": followup.session,
               "baseline_session": baseline.session, "sessions_ordered_by": pair.ordered_by,
               **{k: summary[k] for k in ("changes", "registration", "noise", "detector",
                                          "settings", "warnings", "seconds")},
               "brainuad": __version__, KEY: made}
    _sidecar(change_json, sidecar)  # last: the pair is done
    shutil.rmtree(work, ignore_errors=True)
    return sidecar


def remove_stale_changes(out: Path, scans: list[Scan], pairs: list[Pair]) -> None:
    """Change outputs at a scan that is not the follow-up of a pair of this run (its subject's
    order changed, or cannot be told now): removed, with a line saying so."""
    followups = {pair.followup.path for pair in pairs}
    for scan in scans:
        if scan.path in followups:
            continue
        stale = [out / scan.folder / f"{scan.prefix}{suffix}" for suffix in CHANGE_OUTPUTS]
        if any(path.exists() for path in stale):
            note(f"{scan.prefix}: no longer a follow-up of a pair; its change outputs removed")
            for path in stale:  # the sidecar last, as it was written last
                path.unlink(missing_ok=True)


def participant(bids_dir: str | Path, out: str | Path,
                options: BidsOptions | None = None) -> list[dict]:
    """Segment every scan and compare every consecutive pair of sessions (of the labels and
    shard asked for) into BIDS derivatives under `out`; a sidecar per scan and pair."""
    options = options or BidsOptions()
    detector_config(options.compare)  # a --false-ml out of range: said before any work
    bids_dir, out = Path(bids_dir), Path(out)
    job = make_job(options.segment)
    scans = _shard(find_scans(bids_dir, job.detector.cfg.train.modality, options),
                   options.shard)
    keep_going = options.segment.keep_going
    checked = [attempt(keep_going, check_scan, scan.path) for scan in scans]
    info = job.detector.model_info
    write_description(out, bids_dir, {"name": info.name, "version": info.version,
                                      "kind": info.kind})
    orders = orders_of(scans, options.session_order)
    for why in orders.values():
        if isinstance(why, str):
            note(f"{why}; its sessions are segmented, not compared")
    pairs = pairs_of(scans, orders)
    if not options.sessions:  # every session of each subject seen: stale pairs can be told
        remove_stale_changes(out, scans, pairs)
    names = [scan.prefix for scan in scans]
    results = [check if isinstance(check, Failed) else
               attempt(keep_going, segment_one, scan, out, job)
               for scan, check in track(list(zip(scans, checked, strict=True)), "segment",
                                        unit="scan")]
    failed = {scan.path for scan, r in zip(scans, results, strict=True)
              if isinstance(r, Failed)}
    pairs = [p for p in pairs if not {p.baseline.path, p.followup.path} & failed]
    compare = dataclasses.replace(options.compare, keep_going=keep_going)
    changes = [attempt(keep_going, compare_one, pair, out, compare)
               for pair in track(pairs, "compare", unit="pair")]
    names += [f"{p.followup.prefix} (since ses-{p.baseline.session})" for p in pairs]
    raise_failures(names, results + changes, "bids participant")
    return [r for r in results + changes if not isinstance(r, Failed)]


#: the group table's columns: a scan, then its changes since the previous session
GROUP_COLUMNS = ["subject", "session", "scan", "lesions", "lesion_volume_ml",
                 "brain_volume_ml", "registration_brain_dice", "registration_coverage",
                 "registration_scale", "registration_metric", "warnings", "visit",
                 "baseline_session", "sessions_ordered_by", "new_count", "new_ml",
                 "enlarging_count", "enlarging_ml", "shrinking_count", "shrinking_ml", "report",
                 "change_report"]


def group(out: str | Path) -> list[dict]:
    """`out/lesions.tsv` (a row per scan of the participant step) and `out/index.html`."""
    out = Path(out)
    found = sorted(out.glob("sub-*/**/anat/*_space-orig_desc-lesion_mask.json"))
    if not found:
        raise BrainUADError(f"{out}: no segmented scan (run the participant step first)")
    rows, lesion_volumes = [], []
    for sidecar in found:
        scan = json.loads(sidecar.read_text())
        prefix = sidecar.name.removesuffix("_space-orig_desc-lesion_mask.json")
        change_json = sidecar.with_name(f"{prefix}_space-orig_desc-change_dseg.json")
        change = json.loads(change_json.read_text()) if change_json.is_file() else {}
        counts = change.get("changes", {})
        shrinking = counts.get("shrinking or resolving", {})
        quality = scan.get("registration", {})
        report = sidecar.with_name(f"{prefix}_desc-lesion_report.html")
        lesions_tsv = sidecar.with_name(f"{prefix}_desc-lesion_lesions.tsv")
        if lesions_tsv.is_file():
            lesion_volumes += [float(r["volume_ml"]) for r in csv.DictReader(
                lesions_tsv.read_text().splitlines(), delimiter="\t")]
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
            "sessions_ordered_by": change.get("sessions_ordered_by") or "n/a",
            **{f"{key}_{unit}": counts[kind][unit] if kind in counts else "n/a"
               for key, kind in (("new", "new"), ("enlarging", "enlarging"))
               for unit in ("count", "ml")},
            "shrinking_count": shrinking.get("count", "n/a"),
            "shrinking_ml": shrinking.get("ml", "n/a"),
            "report": str(report.relative_to(out)),
            "change_report": str(change_report.relative_to(out)) if change else "n/a"})
    rows = in_visit_order(rows)
    lines = ["\t".join(GROUP_COLUMNS)] + ["\t".join(str(row[c]) for c in GROUP_COLUMNS)
                                          for row in rows]
    write_text(out / "lesions.tsv", "\n".join(lines) + "\n")
    cohort_index(out / "index.html", rows, lesion_volumes)
    return rows


def in_visit_order(rows: list[dict]) -> list[dict]:
    """The rows of each subject in the time order the participant step found (each follow-up's
    change sidecar names its baseline), with `visit` (1, 2, ...; n/a where the subject's order
    is not known) and `sessions_ordered_by` on every row of the subject."""
    subjects: dict[str, list[dict]] = {}
    for row in rows:
        subjects.setdefault(row["subject"], []).append(row)
    for mine in subjects.values():
        sessions = list(dict.fromkeys(r["session"] for r in mine))
        after = {r["baseline_session"]: r["session"] for r in mine
                 if r["baseline_session"] != "n/a"}
        firsts = [s for s in sessions if s not in after.values()]
        chain = firsts if len(firsts) == 1 else []
        while chain and chain[-1] in after and after[chain[-1]] not in chain:
            chain.append(after[chain[-1]])
        known = sorted(chain) == sorted(sessions)
        by = next((r["sessions_ordered_by"] for r in mine
                   if r["sessions_ordered_by"] != "n/a"), "n/a")
        for row in mine:
            row["visit"] = chain.index(row["session"]) + 1 if known else "n/a"
            row["sessions_ordered_by"] = by if len(sessions) > 1 else "n/a"
    return sorted(rows, key=lambda r: (r["subject"], r["visit"] if r["visit"] != "n/a"
                                       else len(rows), r["scan"]))
