"""`brainuad compare BASELINE FOLLOWUP`: what changed between two visits of one person: new and
enlarging lesions, shrinking or resolving ones. The best model of "normal" for the follow-up is
the same person's earlier scan, from the same scanner as a rule: no other protocol's statistics.
The work is the library's (`longitudinal/`); this command reads the pairs, skips or redoes each
and writes what a person and a program read, on the follow-up's grid:

    OUT/<pair>/change_mask.nii.gz    1 new or enlarging, 2 shrinking or resolving
    OUT/<pair>/change_score.nii.gz   the difference in spreads of its noise (signed)
    OUT/<pair>/changes.csv           one row per change: type, ml, centroid (scanner mm), score
    OUT/<pair>/summary.json          counts and volumes by type, the detector, registration,
                                     settings, seconds
    OUT/<pair>/report.html           both visits in a slice viewer, a panel per change
    OUT/<pair>/change_seg.dcm        where the follow-up is a DICOM series: the change mask as a
                                     DICOM Segmentation on it (two segments)
    OUT/summary.csv                  one row per pair

A pair's folder is written whole under a temporary name and renamed when complete; its
`summary.json` records what made it (both scans' content, the settings, brainuad's version), so
a rerun skips a pair made with what would make it now and redoes any other, saying why.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from brainuad import __version__
from brainuad.errors import BrainUADError, Failed, attempt, raise_failures
from brainuad.io.dicom_seg import Segment, dicom_outputs
from brainuad.io.files import atomic_folder, write_csv, write_text
from brainuad.io.images import check_scan, save_volume
from brainuad.io.provenance import KEY, record, reuse
from brainuad.io.scans import scan_name
from brainuad.io.visits import parse_time, visit_order
from brainuad.longitudinal.calibration import shipped
from brainuad.longitudinal.change import ENLARGING, NEW, RULE, SHRINKING, ChangeConfig
from brainuad.longitudinal.compare import CHANGE_COLUMNS, Found, change_table, find_changes
from brainuad.longitudinal.visits import match, pair_config
from brainuad.preprocessing.pipeline import PreprocessConfig
from brainuad.reporting.html import compare_report
from brainuad.runtime.clock import Stopwatch
from brainuad.runtime.progress import Stages, note, track

SUMMARY = "summary.json"
STAGES = ("read", "register", "intensities", "change", "write", "report")
@dataclass(frozen=True)
class CompareOptions:
    """How to compare: the detector's settings (`change`; None: the shipped detector,
    `longitudinal/calibration.py`) at the operating point `false_ml` (the expected
    false-change volume on a scan-rescan pair, ml; None: the shipped one), the
    preprocessing, and whether a failed pair stops the others."""

    change: ChangeConfig | None = None
    false_ml: float | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    keep_going: bool = False
    visit_order: list[str] | None = None  # the visits' order where labels and times cannot tell
    force: bool = False  # redo pairs done before, even with the same settings
    report_full_fov: bool = False  # the report's viewer shows the whole field of view


def read_visits(path: Path, stated: list[str] | None = None) -> list[tuple[str, Path, Path]]:
    """(pair name, baseline, follow-up) for every consecutive pair of visits of each subject of
    a CSV with columns `subject`, `visit`, `flair` (paths relative to the CSV) and optionally
    `acq_time`; visits in time order by the one rule of `io/visits.py` (`stated`: an order the
    user gave). A subject whose visits' order cannot be told is refused, naming it."""
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as err:
        raise BrainUADError(f"{path}: cannot be read ({err})") from err
    missing = {"subject", "visit", "flair"} - set(rows[0] if rows else {})
    if missing:
        raise BrainUADError(f"{path}: needs the columns subject, visit and flair (missing: "
                            f"{', '.join(sorted(missing))})")
    visits: dict[str, dict[str, tuple[Path, datetime | None]]] = {}
    for line, row in enumerate(rows, start=2):
        scan = (path.parent / row["flair"].strip()).resolve()
        if not scan.exists():
            raise BrainUADError(f"{path}, line {line}: {row['flair']!r} does not exist")
        subject, visit = row["subject"].strip(), row["visit"].strip()
        if visit in visits.get(subject, {}):
            raise BrainUADError(f"{path}, line {line}: visit {visit!r} of {subject!r} twice")
        try:
            when = parse_time(row.get("acq_time") or "")
        except BrainUADError as err:
            raise BrainUADError(f"{path}, line {line}: {err}") from None
        visits.setdefault(subject, {})[visit] = (scan, when)
    pairs = []
    for subject, scans in visits.items():
        order = visit_order(list(scans), {v: t for v, (_, t) in scans.items()}, stated,
                            f"{path}: subject {subject}")
        pairs += [(f"{subject}_{a}-{b}", scans[a][0], scans[b][0]) for a, b in order.pairs()]
    if not pairs:
        raise BrainUADError(f"{path}: no subject has two visits")
    return pairs


def compare_scans(sources: list[str | Path], out: str | Path,
                  options: CompareOptions | None = None) -> list[dict]:
    """Compare BASELINE FOLLOWUP (two scans) or every consecutive pair of a visits CSV into
    `out/<pair>/`, and write `out/summary.csv`. Every scan's header is checked first."""
    options = options or CompareOptions()
    detector_config(options)  # a --false-ml out of the detector's range: said before any work
    out = Path(out)
    sources = [Path(s) for s in sources]
    if len(sources) == 1 and sources[0].suffix == ".csv":
        pairs = read_visits(sources[0], options.visit_order)
    elif len(sources) == 2:
        pairs = [(f"{scan_name(sources[0])}-{scan_name(sources[1])}", *sources)]
    else:
        raise BrainUADError("give BASELINE and FOLLOWUP, or one CSV of visits")
    for _, baseline, followup in pairs:  # before any work
        for scan in (baseline, followup):
            check_scan(scan)
    results = [attempt(options.keep_going, compare_pair, baseline, followup, out / name,
                       options)
               for name, baseline, followup in track(pairs, "compare", unit="pair")]
    rows = [{"pair": name, "error": r.reason} if isinstance(r, Failed) else _row(r)
            for (name, _, _), r in zip(pairs, results, strict=True)]
    write_csv(out / "summary.csv", rows)
    raise_failures([name for name, _, _ in pairs], results, "compare")
    return rows


def _row(summary: dict) -> dict:
    return {"pair": summary["pair"], "baseline": summary["baseline"],
            "followup": summary["followup"],
            **{f"{kind}_count": v["count"] for kind, v in summary["changes"].items()},
            **{f"{kind}_ml": v["ml"] for kind, v in summary["changes"].items()},
            "warnings": "; ".join(summary["warnings"]), "seconds": summary["seconds"]["total"],
            "error": ""}


def detector_config(options: CompareOptions) -> ChangeConfig:
    """The detector's settings: the options', or the shipped ones at `false_ml`."""
    return options.change if options.change is not None else shipped().config(options.false_ml)


def _shown(found: Found, options: CompareOptions) -> dict[str, np.ndarray]:
    """The visits the report shows: as the detector compared them (the brain only), or with
    `report_full_fov` the whole field of view (bias corrected, the baseline's gain matched)."""
    if not options.report_full_fov:
        return {"baseline": found.visits.baseline, "followup": found.visits.followup}
    pair = found.registered
    return {"followup": pair.followup, "baseline": match(pair.baseline, pair.followup,
                                                          found.visits.brain)}


def made_by(baseline: Path, followup: Path, options: CompareOptions) -> dict:
    """The record of a pair's outputs (`io/provenance.py`): what would make them now."""
    settings = {"change": dataclasses.asdict(detector_config(options)),
                "detector": (None if options.change is not None
                             else f"{shipped().name} {shipped().version}"),
                "false_ml": None if options.change is not None else options.false_ml,
                "preprocess": dataclasses.asdict(pair_config(options.preprocess)),
                "report_full_fov": options.report_full_fov}
    return record({"baseline": baseline, "followup": followup},
                  json.loads(json.dumps(settings)))


def compare_pair(baseline_path: Path, followup_path: Path, folder: Path,
                 options: CompareOptions) -> dict:
    """One pair's outputs in `folder`; its summary (read back where the pair was done before
    with what would make it now)."""
    made = made_by(baseline_path, followup_path, options)
    kept, said = reuse(folder / SUMMARY, made, options.force)
    if said:
        note(f"{folder.name}: {said}")
    if kept is not None:
        return kept
    with atomic_folder(folder) as work:
        summary = _compare(baseline_path, followup_path, work, folder.name, options)
        summary[KEY] = made
        write_text(work / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


def _compare(baseline_path: Path, followup_path: Path, folder: Path, name: str,
             options: CompareOptions) -> dict:
    """The outputs of pair `name` written into `folder`; its summary."""
    clock, stages, start = Stopwatch(), Stages(name, len(STAGES)), time.perf_counter()

    def lap(name: str) -> None:
        clock.lap(name)
        stages.done(name)

    cfg = detector_config(options)
    found = find_changes(baseline_path, followup_path, options.preprocess, cfg, lap)
    followup, change = found.followup, found.change
    table, numbered = change_table(found, cfg)
    save_volume(folder / "change_score.nii.gz", change.score, followup.affine, np.float32)
    save_volume(folder / "change_mask.nii.gz", change.mask, followup.affine, np.uint8)
    write_csv(folder / "changes.csv", table, CHANGE_COLUMNS)
    detector = (shipped().describe(options.false_ml) if options.change is None
                else {"name": "rule", "settings given": True})
    dicom = dicom_outputs(followup_path, folder / "change_seg.dcm", change.mask,
                          followup.affine, [Segment(1, "new or enlarging lesion"),
                           Segment(2, "shrinking or resolving lesion", (60, 130, 255))],
                          (f"brainuad compare {detector['name']}",
                           str(detector.get("version", "given"))),
                          "NeighborhoodAnalysis", "brainuad lesion change", series_offset=2000)
    lap("write")
    summary = {
        "pair": name, "baseline": str(baseline_path), "followup": str(followup_path),
        "brainuad": __version__,
        "changes": {kind: {"count": sum(r["type"] == kind for r in table),
                           "ml": round(sum(r["volume_ml"] for r in table if r["type"] == kind),
                                       4)}
                    for kind in (NEW, ENLARGING, SHRINKING)},
        "brain_mask": found.registered.brain_source.to_dict(),
        "registration": {**found.registered.quality,
                         "visit_correlation": found.visits.correlation},
        "noise": found.change.noise,
        "detector": detector,
        "settings": {**dataclasses.asdict(cfg), "rule": RULE},
        "warnings": found.warnings + dicom["warnings"],
        "outputs": ["change_mask.nii.gz", "change_score.nii.gz", "changes.csv", "report.html",
                    *dicom["outputs"]],
        "grid": {"shape": list(followup.shape), "spacing_mm": followup.spacing.round(4).tolist()},
    }
    compare_report(folder / "report.html", summary, table, _shown(found, options),
                   numbered, found.visits.brain, followup.affine, options.report_full_fov)
    lap("report")
    summary["seconds"] = clock.seconds(start)
    stages.close()
    return summary
