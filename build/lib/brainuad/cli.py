"""`brainuad` command line: one sub-command per stage, each parsing and calling one library
function.

Heavy libraries are imported inside the commands so `--help` stays instant. A `BrainUADError`
(bad input) prints as one line and exits 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Unsupervised anomaly segmentation in brain MRI (AnoVAEGAN, Baur et al. 2018).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}
KeepGoing = Annotated[bool, typer.Option(
    "--keep-going", help="A subject that fails does not stop the others; the failed ones are "
                         "listed at the end (exit code 1).")]


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _command(fn: Callable) -> Callable:
    """Register a sub-command whose bad-input errors end as one line on stderr, exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from brainuad.errors import BrainUADError

        try:
            return fn(*args, **kwargs)
        except BrainUADError as err:
            if _state["debug"]:
                raise
            _close_progress_bars()
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None

    return app.command()(wrapper)


def _close_progress_bars() -> None:
    """End a progress bar cut short by an error, so the error gets a line of its own."""
    from tqdm.auto import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def progress(desc: str) -> Callable:
    """A tqdm progress bar factory with the signature the library functions take."""
    from tqdm.auto import tqdm

    return lambda iterable, total: tqdm(iterable, total=total, desc=desc, unit="subject")


@_command
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the cohort and manifest.csv into.")],
    n_healthy: Annotated[int, typer.Option(help="Healthy subjects (train and val).")] = 30,
    n_lesioned: Annotated[int, typer.Option(help="Subjects with lesions (test).")] = 10,
    contrast: Annotated[str, typer.Option(help="flair, t2 or t1.")] = "flair",
    size: Annotated[int, typer.Option(help="Voxel size in mm: 1 (MNI 1 mm) or 2 (quick).")] = 2,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    workers: Annotated[int, typer.Option(help="Parallel processes.")] = 1,
    source: Annotated[Path | None, typer.Option(
        "--from", help="Instead: draw lesions into the real scans of this preprocessed "
                       "manifest (a labelled validation set).")] = None,
    split: Annotated[str, typer.Option(help="With --from: the subjects of this split.")] = "val",
    copies: Annotated[int, typer.Option(
        help="With --from: lesioned copies per scan (loads alternate: default, heavy).")] = 2,
) -> None:
    """Generate a synthetic cohort (healthy + lesioned, exact lesion masks) from MNI152 maps,
    or (--from) real preprocessed scans with synthetic lesions drawn in."""
    from brainuad.synth import SynthConfig, lesioned_copies, synth_cohort

    if source is not None:
        manifest = lesioned_copies(source, out, split, copies, seed, progress("synth"))
    else:
        cfg = SynthConfig(n_healthy=n_healthy, n_lesioned=n_lesioned, contrast=contrast,
                          resolution=size, seed=seed)
        manifest = synth_cohort(out, cfg, workers=workers, progress=progress("synth"))
    typer.echo(f"wrote {len(manifest.subjects)} subjects: {manifest.path}")


@_command
def preprocess(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV of the scans to preprocess.")],
    out: Annotated[Path, typer.Argument(help="Folder for the preprocessed scans and manifest.")],
    overwrite: Annotated[bool, typer.Option(help="Redo subjects already done.")] = False,
    register: Annotated[str, typer.Option(
        help="auto: N4 + registration to MNI152 for every scan not already on its grid; "
             "always; never (atlas-space scans only).")] = "auto",
    reference: Annotated[str, typer.Option(
        help="Modality used for N4 and the atlas registration; the others follow it.")]
    = "flair",
    workers: Annotated[int, typer.Option(help="Subjects processed in parallel.")] = 1,
    shard: Annotated[str | None, typer.Option(
        help="Only shard i/n of the manifest (every n-th subject from the i-th), e.g. 1/4.")]
    = None,
    keep_going: KeepGoing = False,
) -> None:
    """Bring scans into atlas space (N4, registration, skull stripping) when they are not there
    yet, denoise (CurvatureFlow), scale to [0, 1]; write a new manifest."""
    from brainuad.preprocess import PreprocessConfig, preprocess_manifest

    cfg = PreprocessConfig(register=register, reference=reference)
    result = preprocess_manifest(manifest, out, cfg, overwrite=overwrite, workers=workers,
                                 shard_spec=shard, progress=progress("preprocess"),
                                 keep_going=keep_going)
    typer.echo(f"preprocessed {len(result.subjects)} subjects: {result.path}")


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@_command
def train(
    manifest: Annotated[Path, typer.Argument(help="Preprocessed manifest (healthy train/val).")],
    run: Annotated[Path, typer.Argument(help="Run directory to create (or resume).")],
    model: Annotated[str | None, typer.Option(help="dae, sae8, sae16, saegan, dvae, svae, "
                                                 "anovaegan or threshold.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (see configs/).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Slice side in pixels.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    precision: Annotated[str | None, typer.Option(help="32-true, bf16-mixed, 16-mixed.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="cpu, gpu or auto.")] = None,
    devices: Annotated[str | None, typer.Option(help="Devices per node (Lightning).")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Nodes (Lightning).")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, ddp, ...")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
    keep_going: Annotated[bool, typer.Option(
        "--keep-going", help="Leave out subjects whose scans fail to load (recorded in "
                             "provenance.json; listed at the end, exit code 1).")] = False,
) -> None:
    """Train a model on healthy slices; store weights, config and detection threshold in RUN."""
    from brainuad.models.registry import run_config
    from brainuad.training import train as train_run

    if devices is not None and devices.isdigit():
        devices = int(devices)
    overrides = {
        "model": _drop_none(image_size=image_size),
        "train": _drop_none(epochs=epochs, batch_size=batch_size, seed=seed, precision=precision,
                            accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                            strategy=strategy),
    }
    cfg = None if resume else run_config(model, str(config) if config else None, overrides)
    train_run(manifest, run, cfg, resume=resume, epochs=epochs,
              progress=progress("threshold"), keep_going=keep_going)
    from brainuad.distributed import launch_rank

    if launch_rank(devices or 1) == 0:  # one line, not one per process
        typer.echo(f"run ready: {run}")


@_command
def use_epoch(
    run: Annotated[Path, typer.Argument(help="Run directory whose model to replace.")],
    epoch: Annotated[int, typer.Argument(help="Epoch (0-based, as RUN/samples/ counts).")],
) -> None:
    """Make one epoch's checkpoint the run's model (AnoGAN keeps one per epoch: pick the last
    whose samples look realistic) and recompute its threshold on the training scans."""
    from brainuad.training import use_epoch as use

    use(run, epoch, progress=progress("threshold"))
    typer.echo(f"{run}: now uses epoch {epoch}")


@_command
def detect(
    run: Annotated[Path, typer.Argument(help="Run directory written by `brainuad train`.")],
    manifest: Annotated[Path, typer.Argument(help="Preprocessed manifest of scans to segment.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/pred).")] = None,
    slices: Annotated[str | None, typer.Option(help="brain (every slice with brain) or "
                                                  "paper (the 20 middle slices).")] = None,
    split: Annotated[str | None, typer.Option(help="Only subjects of this split.")] = None,
    shard: Annotated[str | None, typer.Option(
        help="Only shard i/n of the subjects (every n-th from the i-th), e.g. 1/4.")] = None,
    residual: Annotated[str | None, typer.Option(
        help="abs (the paper), positive (brighter than the reconstruction), or hyperintense "
             "(positive where the input is above its 0.9 brain quantile).")] = None,
    fpr: Annotated[float | None, typer.Option(
        help="Threshold flagging this fraction of the training scans' voxels (e.g. 0.05) "
             "instead of the run's 98th percentile (= 0.02).")] = None,
    precision: Annotated[str | None, typer.Option(
        help="auto (bf16 where the CPU has it natively, else 32), 32 or bf16; the threshold "
             "is taken the same way.")] = None,
    accelerator: Annotated[str, typer.Option(
        help="auto (a GPU where torch sees one), cpu or gpu: where the networks run.")] = "auto",
    score: Annotated[str | None, typer.Option(
        help="residual (the network's, as the paper), normative (z-score against the run's "
             "normative maps) or product (both).")] = None,
    workers: Annotated[int, typer.Option(help="Subjects detected in parallel processes.")] = 1,
    keep_going: KeepGoing = False,
) -> None:
    """Anomaly score and lesion mask per subject, as NIfTI on the scan's own grid. RUN is a run
    directory or a bundled model (`brainuad models`)."""
    from brainuad.detect import detect_manifest

    folder = detect_manifest(run, manifest, out, slices, split, progress=progress("detect"),
                             shard_spec=shard, residual=residual, fpr=fpr,
                             precision=precision, keep_going=keep_going,
                             accelerator=accelerator, score=score, workers=workers)
    typer.echo(f"predictions: {folder}")


@_command
def calibrate(
    run: Annotated[Path, typer.Argument(help="Run directory written by `brainuad train`.")],
    slices: Annotated[str | None, typer.Option(help="brain or paper.")] = None,
    residual: Annotated[str | None, typer.Option(help="abs, positive or hyperintense.")] = None,
    score: Annotated[str | None, typer.Option(help="residual, normative or product.")] = None,
    labelled: Annotated[Path | None, typer.Option(
        help="Also choose the operating point: the threshold with the best Dice over this "
             "labelled validation manifest (its val split; e.g. `brainuad synth --from`).")]
    = None,
) -> None:
    """Add thresholds for another scoring to a run, taken on its validation scans (the
    training manifest's `val` split; `train` where it has none), in every precision; with
    --labelled, its validation operating point too. Detection never makes thresholds: a
    scoring the run lacks is an error until this has run."""
    from brainuad import rundir
    from brainuad.training import calibrate as add
    from brainuad.training import choose_operating_point

    settings = rundir.read_config(run).detect.replaced(slices=slices, residual=residual,
                                                       score=score)
    info = add(run, settings=[settings], progress=progress("calibrate"))
    typer.echo(f"{run}: thresholds for {len(info['scorings'])} scoring(s)")
    if labelled is not None:
        info = choose_operating_point(run, labelled, [settings], progress=progress("choose"))
        for key, point in info["operating_points"].items():
            typer.echo(f"operating point {key}: threshold {point['threshold']:.4g}, "
                       f"Dice {point['dice']:.3f} on {len(point['subjects'])} scans")


@_command
def models() -> None:
    """The models that ship inside brainuad, for `segment --model` and `detect`."""
    from brainuad.bundled import DEFAULT, available

    found = available()
    if not found:
        typer.echo("no bundled models in this installation")
    for model in found:
        default = " (default)" if model.name == DEFAULT else ""
        typer.echo(f"{model.name}{default}  version {model.version}, {model.megabytes:.1f} MB: "
                   f"{model.info.get('description', '')}")


@_command
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Predictions folder (RUN/pred) or a run folder.")],
    manifest: Annotated[Path, typer.Argument(help="Manifest with lesion labels.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default PRED/../eval).")]
    = None,
    split: Annotated[str, typer.Option(
        help="Score the subjects of this split (test, val, train) or all.")] = "test",
    keep_going: KeepGoing = False,
) -> None:
    """Dice, AUROC, AUPRC, best Dice (per subject and over all of them), lesion-wise rates per
    subject; summary and figures. Subjects the model was trained on are left out."""
    from brainuad.evaluate import evaluate as evaluate_run
    from brainuad.report import results_table

    if (pred / "pred").is_dir() and not (pred / "detect.json").exists():
        pred = pred / "pred"
    result = evaluate_run(pred, manifest, out, progress=progress("evaluate"),
                          keep_going=keep_going, split=None if split == "all" else split)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(results_table({result.summary.get("model") or "model": result.summary}))
    typer.echo(f"evaluation: {(out or pred.parent / 'eval')}")


@_command
def benchmark(
    config: Annotated[Path, typer.Argument(help="Benchmark YAML (e.g. configs/experiments/"
                                                "mslub_flair.yaml).")],
    out: Annotated[Path, typer.Argument(help="Folder for preprocessed scans, runs, results.")],
    models: Annotated[str | None, typer.Option(
        help="Comma-separated subset of the file's models, e.g. anovaegan,threshold.")] = None,
    quick: Annotated[bool, typer.Option(help="Smoke check: 64 px, 2 epochs.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Override the training epochs.")] = None,
    workers: Annotated[int, typer.Option(help="Subjects preprocessed in parallel.")] = 1,
    split: Annotated[str | None, typer.Option(
        help="Override the file's split: val (the labelled validation set) or test.")] = None,
) -> None:
    """Preprocess a cohort, train (or reuse) several models, detect and evaluate each with
    every detection variant of CONFIG; write one table (markdown, CSV, JSON) and figures."""
    from brainuad.benchmark import run_benchmark

    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    run_benchmark(config, out, chosen, quick=quick, epochs=epochs, workers=workers,
                  say=typer.echo, progress=lambda desc: progress(desc), split=split)
    typer.echo(f"results: {out / 'results.md'}")


@_command
def segment(
    scans: Annotated[list[Path] | None, typer.Argument(
        help="FLAIR scans as acquired: NIfTI files, folders holding one DICOM series, folders "
             "of such scans, or a manifest CSV.", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Output folder: one subfolder per scan.")] = Path(
        "brainuad-segment"),
    model: Annotated[str, typer.Option(
        help="A bundled model (`brainuad models`) or a run directory.")] = "",
    accelerator: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    fpr: Annotated[float | None, typer.Option(
        help="Threshold flagging this fraction of the model's calibration voxels instead of "
             "its validation operating point.")] = None,
    example: Annotated[bool, typer.Option(
        "--example", help="Make an example scan (a synthetic lesioned FLAIR on a tilted, "
                          "anisotropic grid) in OUT and segment it.")] = False,
    keep_going: KeepGoing = False,
) -> None:
    """Lesion mask, anomaly score, lesion table and a QC report per scan, on the scan's own
    grid, with a model that ships inside brainuad: no training needed."""
    from tqdm.auto import tqdm

    from brainuad.bundled import DEFAULT
    from brainuad.segment import example_scan, load_truth, segment_scans

    if example == bool(scans):
        from brainuad.errors import BrainUADError

        raise BrainUADError("give scans to segment, or --example (not both)")
    if example:
        typer.echo(f"making an example scan in {out} ...")
        scan, truth = example_scan(out)
        scans = [scan]

    def stages(total: int, name: str):
        return tqdm(total=total, desc=f"  {name}", unit="stage", leave=False)

    rows = segment_scans(scans, out, model or DEFAULT, accelerator, fpr, keep_going,
                         progress("segment"), stages)
    for row in rows:
        typer.echo(f"{row['scan']}: {row['lesions']} lesions, {row['lesion_volume_ml']:.2f} ml"
                   f" ({row['seconds']:.1f} s); report: {out / row['scan'] / 'report.html'}")
        for warning in filter(None, row["warnings"].split("; ")):
            typer.echo(f"warning: {row['scan']}: {warning}", err=True)
    if example:
        from brainuad.io import load_image
        from brainuad.metrics import dice

        found = load_image(out / rows[0]["scan"] / "lesion_mask.nii.gz", allow_blank=True)
        known = load_truth(truth, found)
        typer.echo(f"Dice against the example's known lesions: "
                   f"{dice(found.data > 0, known):.3f} ({int(known.sum())} lesion voxels)")
    typer.echo(f"summary: {out / 'summary.csv'}")


@_command
def demo(
    out: Annotated[Path, typer.Argument(help="Folder for the cohort, runs and results.")] = Path(
        "brainuad-demo"),
    epochs: Annotated[int, typer.Option(help="AnoVAEGAN training epochs.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Synth, preprocess, train AnoVAEGAN and the threshold baseline, detect, evaluate: minutes."""
    from brainuad.demo import run_demo

    run_demo(out, epochs=epochs, seed=seed, say=typer.echo,
             progress=lambda desc: progress(desc))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
