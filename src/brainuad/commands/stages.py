"""The pipeline's stages: `synth`, `preprocess`, `train`, `calibrate`, `use-epoch`, `detect`,
`evaluate`, `benchmark`, `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from brainuad.commands.app import STAGES, KeepGoing, _command, _drop_none


@_command(STAGES)
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the cohort and manifest.csv into.")],
    n_healthy: Annotated[int | None, typer.Option(help="Healthy subjects (train and val).")]
    = None,
    n_lesioned: Annotated[int | None, typer.Option(help="Subjects with lesions (test).")] = None,
    contrast: Annotated[str | None, typer.Option(
        help="flair, flair3d (a 3D FLAIR's tissue contrast), t2 or t1.")] = None,
    size: Annotated[int | None, typer.Option(
        help="Voxel size in mm: 1 (MNI 1 mm) or 2 (quick).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    workers: Annotated[int, typer.Option(help="Parallel processes.")] = 1,
    source: Annotated[Path | None, typer.Option(
        "--from", help="Instead: draw lesions into the real scans of this preprocessed "
                       "manifest (a labelled validation set).")] = None,
    split: Annotated[str, typer.Option(help="With --from: the subjects of this split.")] = "val",
    copies: Annotated[int, typer.Option(
        help="With --from: lesioned copies per scan (loads alternate: default, heavy).")] = 2,
) -> None:
    """Make a synthetic cohort with exact lesion masks, or lesions drawn into real scans.

    From nilearn's MNI152 tissue maps (defaults: 30 healthy, 10 lesioned, FLAIR, 2 mm), or with
    --from, synthetic lesions drawn into real preprocessed scans (a labelled validation set).
    """
    if source is not None:
        from brainuad.data.lesions import lesioned_copies

        manifest = lesioned_copies(source, out, split, copies, seed)
    else:
        from brainuad.data.synth import SynthConfig, synth_cohort

        cfg = SynthConfig(seed=seed, **_drop_none(n_healthy=n_healthy, n_lesioned=n_lesioned,
                                                  contrast=contrast, resolution=size))
        manifest = synth_cohort(out, cfg, workers=workers)
    typer.echo(f"wrote {len(manifest.subjects)} subjects: {manifest.path}")


@_command(STAGES)
def preprocess(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV of the scans to preprocess.")],
    out: Annotated[Path, typer.Argument(help="Folder for the preprocessed scans and manifest.")],
    overwrite: Annotated[bool, typer.Option(help="Redo subjects already done.")] = False,
    register: Annotated[str | None, typer.Option(
        help="auto (default): N4 + registration to MNI152 for every scan not already on its "
             "grid; always; never (atlas-space scans only).")] = None,
    reference: Annotated[str | None, typer.Option(
        help="Modality used for N4 and the atlas registration (default flair); the others "
             "follow it.")] = None,
    workers: Annotated[int, typer.Option(help="Subjects processed in parallel.")] = 1,
    shard: Annotated[str | None, typer.Option(
        help="Only shard i/n of the manifest (every n-th subject from the i-th), e.g. 1/4.")]
    = None,
    qc: Annotated[str | None, typer.Option(
        help="refuse (default) a subject whose registration is broken; warn: keep it.")]
    = None,
    brain_mask: Annotated[str | None, typer.Option(
        help="scan (default): the brain outlined in each scan (deepbet), the template's mask "
             "where the two disagree; template: the MNI152 mask carried over.")] = None,
    keep_going: KeepGoing = False,
) -> None:
    """Scans into atlas space: N4, registration, brain mask, denoising, [0, 1] scaling.

    Scans already on the atlas grid keep it; writes a new manifest of the results.
    """
    from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_manifest
    from brainuad.preprocessing.registration import RegistrationConfig

    cfg = PreprocessConfig(**_drop_none(register=register, reference=reference,
                                        brain_mask=brain_mask),
                           registration=RegistrationConfig(**_drop_none(qc=qc)))
    result = preprocess_manifest(manifest, out, cfg, overwrite=overwrite, workers=workers,
                                 shard_spec=shard, keep_going=keep_going)
    typer.echo(f"preprocessed {len(result.subjects)} subjects: {result.path}")


@_command(STAGES)
def train(
    manifest: Annotated[Path, typer.Argument(help="Preprocessed manifest (healthy train/val).")],
    run: Annotated[Path, typer.Argument(help="Run directory to create (or resume).")],
    model: Annotated[str | None, typer.Option(
        help="dae, sae8, sae16, saegan, dvae, svae, anovaegan (default), anogan, denoising, "
             "normative or threshold.")] = None,
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
    """Train a model on healthy scans into a run directory.

    The run holds the weights (or maps), config, model.json and the thresholds taken on the
    manifest's held-out healthy scans.
    """
    from brainuad.models.registry import run_config
    from brainuad.training.launch import launch_rank
    from brainuad.training.train import train as train_run

    if devices is not None and devices.isdigit():
        devices = int(devices)
    overrides = {
        "model": _drop_none(image_size=image_size),
        "train": _drop_none(epochs=epochs, batch_size=batch_size, seed=seed, precision=precision,
                            accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                            strategy=strategy),
    }
    cfg = None if resume else run_config(model, str(config) if config else None, overrides)
    train_run(manifest, run, cfg, resume=resume, epochs=epochs, keep_going=keep_going)
    if launch_rank(devices or 1) == 0:  # one line, not one per process
        typer.echo(f"run ready: {run}")


@_command(STAGES)
def calibrate(
    run: Annotated[Path, typer.Argument(help="Run directory written by `brainuad train`.")],
    slices: Annotated[str | None, typer.Option(help="brain or paper.")] = None,
    residual: Annotated[str | None, typer.Option(
        help="abs, positive, hyperintense or negative.")] = None,
    score: Annotated[str | None, typer.Option(help="residual, normative or product.")] = None,
    labelled: Annotated[Path | None, typer.Option(
        help="Also choose the operating point: the threshold with the best Dice over this "
             "labelled validation manifest (its val split; e.g. `brainuad synth --from`).")]
    = None,
) -> None:
    """Add thresholds for another scoring to a run (and its validation operating point).

    Taken on the training manifest's held-out `val` scans (`train` where it has none), in every
    precision; detection never makes thresholds, so a scoring a run lacks is an error until
    this has run.
    """
    from brainuad.detection.calibration import calibrate as add
    from brainuad.detection.calibration import choose_operating_point
    from brainuad.models.folder import read_config

    settings = read_config(run).detect.replaced(slices=slices, residual=residual, score=score)
    info = add(run, settings=[settings])
    typer.echo(f"{run}: thresholds for {len(info['scorings'])} scoring(s)")
    if labelled is not None:
        info = choose_operating_point(run, labelled, [settings])
        for key, point in info["operating_points"].items():
            typer.echo(f"operating point {key}: threshold {point['threshold']:.4g}, "
                       f"Dice {point['dice']:.3f} on {len(point['subjects'])} scans")


@_command(STAGES)
def use_epoch(
    run: Annotated[Path, typer.Argument(help="Run directory whose model to replace.")],
    epoch: Annotated[int, typer.Argument(help="Epoch (0-based, as RUN/samples/ counts).")],
) -> None:
    """Make one epoch's checkpoint a run's model (AnoGAN), and recalibrate it.

    AnoGAN keeps a checkpoint and a grid of samples per epoch: pick the last whose samples look
    realistic (the paper took 82 of 150).
    """
    from brainuad.training.train import use_epoch as use

    use(run, epoch)
    typer.echo(f"{run}: now uses epoch {epoch}")


@_command(STAGES)
def detect(
    run: Annotated[Path, typer.Argument(help="Run directory, or a bundled model's name.")],
    manifest: Annotated[Path, typer.Argument(help="Preprocessed manifest of scans to segment.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/pred).")] = None,
    slices: Annotated[str | None, typer.Option(help="brain (every slice with brain) or "
                                                  "paper (the 20 middle slices).")] = None,
    split: Annotated[str | None, typer.Option(help="Only subjects of this split.")] = None,
    shard: Annotated[str | None, typer.Option(
        help="Only shard i/n of the subjects (every n-th from the i-th), e.g. 1/4.")] = None,
    residual: Annotated[str | None, typer.Option(
        help="abs (the paper), positive (brighter than expected), hyperintense (positive "
             "where the input is above its 0.9 brain quantile) or negative (darker).")] = None,
    fpr: Annotated[float | None, typer.Option(
        help="Threshold flagging this fraction of the calibration scans' voxels (e.g. 0.05) "
             "instead of the run's operating point or 98th percentile.")] = None,
    precision: Annotated[str | None, typer.Option(
        help="auto (bf16 where the CPU has it natively, else 32), 32 or bf16.")] = None,
    accelerator: Annotated[str, typer.Option(
        help="auto (a GPU where torch sees one), cpu or gpu: where the networks run.")] = "auto",
    score: Annotated[str | None, typer.Option(
        help="residual (a network's, as the paper), normative (z-score against normative "
             "maps) or product (both).")] = None,
    workers: Annotated[int, typer.Option(help="Subjects detected in parallel processes.")] = 1,
    keep_going: KeepGoing = False,
) -> None:
    """Anomaly score and lesion mask per subject of a preprocessed manifest.

    Written as NIfTI on each scan's own grid.
    """
    from brainuad.detection.cohort import DetectOptions, detect_manifest

    options = DetectOptions(split=split, shard=shard, fpr=fpr, accelerator=accelerator,
                            workers=workers, keep_going=keep_going,
                            scoring={"slices": slices, "residual": residual,
                                     "precision": precision, "score": score})
    typer.echo(f"predictions: {detect_manifest(run, manifest, out, options)}")


@_command(STAGES)
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Predictions folder (RUN/pred) or a run folder.")],
    manifest: Annotated[Path, typer.Argument(help="Manifest with lesion labels.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default PRED/../eval).")]
    = None,
    split: Annotated[str, typer.Option(
        help="Score the subjects of this split (test, val, train) or all.")] = "test",
    keep_going: KeepGoing = False,
) -> None:
    """Dice, AUROC, AUPRC, best Dice and lesion-wise rates of detections against labels.

    Per subject and over all of them, with summary and figures; subjects the model was trained
    on are left out.
    """
    from brainuad.evaluation.evaluate import evaluate as evaluate_run
    from brainuad.reporting.tables import results_table

    if (pred / "pred").is_dir() and not (pred / "detect.json").exists():
        pred = pred / "pred"
    result = evaluate_run(pred, manifest, out, split=None if split == "all" else split,
                          keep_going=keep_going)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(results_table({result.summary.get("model") or "model": result.summary}))
    typer.echo(f"evaluation: {(out or pred.parent / 'eval')}")


@_command(STAGES)
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
    """Several models on one cohort, one table: the paper's Table 1 and beyond.

    Preprocesses the cohort, trains (or reuses) every model, detects and evaluates each with
    every detection variant of CONFIG; writes the table (markdown, CSV, JSON) and figures.
    """
    from brainuad.commands.benchmark import BenchmarkOptions, run_benchmark

    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    run_benchmark(config, out, BenchmarkOptions(chosen, quick, epochs, workers, split),
                  say=typer.echo)
    typer.echo(f"results: {out / 'results.md'}")


@_command(STAGES)
def demo(
    out: Annotated[Path, typer.Argument(help="Folder for the cohort, runs and results.")] = Path(
        "brainuad-demo"),
    epochs: Annotated[int | None, typer.Option(
        help="AnoVAEGAN training epochs (default 10).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
) -> None:
    """The whole method on a small synthetic cohort, in minutes.

    Synth, preprocess, train AnoVAEGAN and the threshold baseline, detect, evaluate.
    """
    from brainuad.commands.demo import run_demo

    run_demo(out, say=typer.echo, **_drop_none(epochs=epochs, seed=seed))
