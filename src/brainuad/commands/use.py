"""The commands a user runs: `segment`, `compare`, `bids`, `models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from brainuad.commands.app import (
    USE,
    Force,
    FullFov,
    KeepGoing,
    NormalSites,
    _command,
    _drop_none,
    order_option,
)
from brainuad.runtime.memory import reuse_memory


@_command(USE)
def segment(
    scans: Annotated[list[Path] | None, typer.Argument(
        help="Scans as acquired: NIfTI files, DICOM folders (one series, or a study: its "
             "FLAIR; --series), folders of such scans, or a manifest CSV.",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Output folder: one subfolder per scan.")] = Path(
        "brainuad-segment"),
    model: Annotated[str | None, typer.Option(
        help="A bundled model (`brainuad models`; default flair-ms) or a run directory.")]
    = None,
    accelerator: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    flag_fraction: Annotated[float | None, typer.Option(
        help="Threshold that flags this fraction (e.g. 0.01) of the scored voxels of the "
             "model's calibration scans instead of its validation operating point. For "
             "flair-ms those are unlabelled MS patients' FLAIRs, lesions included: not a "
             "false-positive rate on healthy brains (its card).")] = None,
    fpr: Annotated[float | None, typer.Option(
        hidden=True, help="The old name of --flag-fraction.")] = None,
    example: Annotated[bool, typer.Option(
        "--example", help="Make an example scan (a synthetic lesioned FLAIR on a tilted, "
                          "anisotropic grid) in OUT and segment it.")] = False,
    qc: Annotated[str | None, typer.Option(
        help="refuse (default): a scan whose registration is broken is refused, a doubtful "
             "one warned; warn: go on with both (the figures in summary.json and the report)."
    )] = None,
    brain_mask: Annotated[str | None, typer.Option(
        help="scan (default): the brain outlined in the scan itself (deepbet), the template's "
             "mask where the two disagree; template: the MNI152 mask carried over by the "
             "registration (skips deepbet: seconds less per scan).")] = None,
    series: Annotated[str | None, typer.Option(
        help="For a DICOM folder that holds several series (a study export): the "
             "SeriesInstanceUID to read. Without it, the one series, or the one FLAIR by its "
             "tags (description, inversion and echo times); else the series are listed.")]
    = None,
    normal_sites: NormalSites = None,
    keep_going: KeepGoing = False,
    force: Force = False,
    report_full_fov: FullFov = False,
) -> None:
    """Raw scans in: lesion mask, score, lesion table and QC report per scan.

    Everything is written on the scan's own grid, with a model that ships inside brainuad (no
    training needed) or one you trained.
    """
    from brainuad.commands.segment import SegmentOptions, segment_scans
    from brainuad.errors import BrainUADError

    reuse_memory()
    if example == bool(scans):
        raise BrainUADError("give scans to segment, or --example (not both)")
    if fpr is not None:
        if flag_fraction is not None:
            raise BrainUADError("--fpr is the old name of --flag-fraction: give one")
        typer.echo("note: --fpr is now --flag-fraction: the fraction of the calibration scans' "
                   "voxels flagged, not a false-positive rate on healthy brains", err=True)
        flag_fraction = fpr
    if example:
        from brainuad.data.example import example_scan

        typer.echo(f"making an example scan in {out} ...")
        scan, truth = example_scan(out)
        scans = [scan]
    options = SegmentOptions(**_drop_none(model=model, accelerator=accelerator,
                                          flag_fraction=flag_fraction,
                                          keep_going=keep_going, qc=qc, brain_mask=brain_mask,
                                          force=force, report_full_fov=report_full_fov,
                                          series=series, normal_sites=normal_sites))
    rows = segment_scans(scans, out, options)
    for row in rows:
        if row.get("error"):
            continue
        removed = (f", {row['removed_at_normal_sites']} left out at normal bright places"
                   if row.get("removed_at_normal_sites") else "")
        typer.echo(f"{row['scan']}: {row['lesions']} lesions, {row['lesion_volume_ml']:.2f} ml"
                   f"{removed} ({row['seconds']:.1f} s); report: "
                   f"{out / row['scan'] / 'report.html'}")
        for warning in filter(None, row["warnings"].split("; ")):
            typer.echo(f"warning: {row['scan']}: {warning}", err=True)
    if example:
        from brainuad.data.example import load_truth
        from brainuad.evaluation.metrics import dice
        from brainuad.io.images import load_image

        found = load_image(out / rows[0]["scan"] / "lesion_mask.nii.gz", allow_blank=True)
        known = load_truth(truth, found)
        typer.echo(f"Dice against the example's known lesions: "
                   f"{dice(found.data > 0, known):.3f} ({int(known.sum())} lesion voxels)")
    typer.echo(f"summary: {out / 'summary.csv'}")


@_command(USE)
def compare(
    scans: Annotated[list[Path] | None, typer.Argument(
        help="BASELINE FOLLOWUP (each a NIfTI or a DICOM folder: its one series or its "
             "FLAIR), or one CSV with columns subject, visit, flair (every consecutive pair "
             "of each subject).",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Output folder: one subfolder per pair.")] = Path(
        "brainuad-compare"),
    example: Annotated[bool, typer.Option(
        "--example", help="Make an example pair (two visits of a synthetic person, new "
                          "lesions at the second) in OUT and compare it.")] = False,
    qc: Annotated[str | None, typer.Option(
        help="refuse (default) a pair whose follow-up registration is broken, or whose visits "
             "are not one person's; warn: go on.")] = None,
    visit_order: Annotated[str | None, typer.Option(
        help="The visits' labels in time order, e.g. pre,post: for a CSV whose visits have no "
             "acq_time and labels that are not numbers or dates.")] = None,
    false_ml: Annotated[float | None, typer.Option(min=0.0,
        help="The operating point: the change volume (ml) it flags on average on a scan "
             "against a simulated rescan of itself, where every change is false (default: "
             "the detector's own; docs/models/compare.md).")] = None,
    keep_going: KeepGoing = False,
    force: Force = False,
    report_full_fov: FullFov = False,
) -> None:
    """Two visits in: new, enlarging and shrinking lesions between them.

    Change mask, change score, a table of changes and a report, on the follow-up's own grid.
    """
    from brainuad.commands.compare import CompareOptions, compare_scans
    from brainuad.errors import BrainUADError
    from brainuad.preprocessing.pipeline import PreprocessConfig
    from brainuad.preprocessing.registration import RegistrationConfig

    reuse_memory()
    if example == bool(scans):
        raise BrainUADError("give BASELINE FOLLOWUP (or a visits CSV), or --example")
    if example:
        from brainuad.data.example import example_pair

        typer.echo(f"making an example pair in {out} ...")
        made = example_pair(out)
        scans = [made["baseline"], made["followup"]]
    options = CompareOptions(preprocess=PreprocessConfig(
        registration=RegistrationConfig(**_drop_none(qc=qc))), keep_going=keep_going,
        visit_order=order_option(visit_order), force=force, false_ml=false_ml,
        report_full_fov=report_full_fov)
    for row in compare_scans(scans, out, options):
        if row.get("error"):
            continue
        typer.echo(f"{row['pair']}: {row['new_count']} new ({row['new_ml']:.2f} ml), "
                   f"{row['enlarging_count']} enlarging ({row['enlarging_ml']:.2f} ml), "
                   f"{row['shrinking or resolving_count']} shrinking or resolving "
                   f"({row['shrinking or resolving_ml']:.2f} ml); report: "
                   f"{out / row['pair'] / 'report.html'}")
        for warning in filter(None, row["warnings"].split("; ")):
            typer.echo(f"warning: {row['pair']}: {warning}", err=True)
    typer.echo(f"summary: {out / 'summary.csv'}")


@_command(USE)
def bids(
    bids_dir: Annotated[Path, typer.Argument(help="A BIDS dataset (raw).", show_default=False)],
    out_dir: Annotated[Path, typer.Argument(help="Where the BIDS derivatives go.",
                                            show_default=False)],
    level: Annotated[str, typer.Argument(
        help="participant: segment every scan, compare consecutive sessions; group: the "
             "study's table and index.html.", show_default=False)],
    participant_label: Annotated[list[str] | None, typer.Option(
        help="Only these participants (without sub-); repeat the option for more.")] = None,
    session_label: Annotated[list[str] | None, typer.Option(
        help="Only these sessions (without ses-).")] = None,
    model: Annotated[str | None, typer.Option(
        help="A bundled model (`brainuad models`; default flair-ms) or a run directory.")]
    = None,
    accelerator: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    qc: Annotated[str | None, typer.Option(
        help="refuse (default) a scan whose registration is broken; warn: go on.")] = None,
    shard: Annotated[str | None, typer.Option(
        help="i/n: only every n-th subject from the i-th (a job array covers the study).")]
    = None,
    session_order: Annotated[str | None, typer.Option(
        help="Session labels in time order, e.g. pre,post: for subjects whose sessions have "
             "no acq_time (sessions.tsv, scans.tsv) and labels that are not numbers or dates "
             "(such subjects are otherwise not compared).")] = None,
    false_ml: Annotated[float | None, typer.Option(min=0.0,
        help="compare's operating point: the change volume (ml) it flags on average on a scan "
             "against a simulated rescan of itself, where every change is false (default: "
             "the detector's; docs/models/compare.md).")] = None,
    keep_going: KeepGoing = False,
    force: Force = False,
    normal_sites: NormalSites = None,
    report_full_fov: FullFov = False,
) -> None:
    """A BIDS study in: BIDS derivatives (masks, scores, changes) and a cohort table out.

    `participant` segments every FLAIR and compares each subject's consecutive sessions
    (done scans are skipped on a rerun); `group` writes OUT_DIR/lesions.tsv and index.html.
    """
    from brainuad.commands.bids_app import BidsOptions, group, participant
    from brainuad.commands.compare import CompareOptions
    from brainuad.commands.segment import SegmentOptions
    from brainuad.errors import BrainUADError
    from brainuad.preprocessing.pipeline import PreprocessConfig
    from brainuad.preprocessing.registration import RegistrationConfig

    if level == "group":
        rows = group(out_dir)
        typer.echo(f"{len(rows)} scans: {out_dir / 'lesions.tsv'}, {out_dir / 'index.html'}")
        return
    if level != "participant":
        raise BrainUADError(f"analysis level {level!r}: choose participant or group")
    reuse_memory()
    options = BidsOptions(
        participants=participant_label, sessions=session_label, shard=shard,
        session_order=order_option(session_order),
        segment=SegmentOptions(**_drop_none(model=model, accelerator=accelerator, qc=qc,
                                            keep_going=keep_going, force=force,
                                            normal_sites=normal_sites),
                               report_full_fov=report_full_fov),
        compare=CompareOptions(preprocess=PreprocessConfig(
            registration=RegistrationConfig(**_drop_none(qc=qc))), force=force,
            false_ml=false_ml, report_full_fov=report_full_fov))
    done = participant(bids_dir, out_dir, options)
    typer.echo(f"{len(done)} scans and pairs done: {out_dir}")


@_command(USE)
def models() -> None:
    """The models that ship inside brainuad: kind, modality, lesion polarity."""
    from brainuad.models.bundled import DEFAULT, available

    found = available()
    if not found:
        typer.echo("no bundled models in this installation")
    for model in found:
        info = model.info
        default = " (default)" if info.name == DEFAULT else ""
        typer.echo(f"{info.name}{default}  version {info.version}: {info.kind} model of "
                   f"{info.modality.upper()}, {info.polarity} lesions, {model.megabytes:.1f} MB"
                   f"\n  {info.description}\n  card: {info.card}")
