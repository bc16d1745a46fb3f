"""`brainuad` command line: one sub-command per stage, each parsing and calling one library function.

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
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None

    return app.command()(wrapper)


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
) -> None:
    """Generate a synthetic cohort (healthy + lesioned, exact lesion masks) from MNI152 maps."""
    from brainuad.synth import SynthConfig, synth_cohort

    cfg = SynthConfig(n_healthy=n_healthy, n_lesioned=n_lesioned, contrast=contrast,
                      resolution=size, seed=seed)
    manifest = synth_cohort(out, cfg, workers=workers, progress=progress("synth"))
    typer.echo(f"wrote {len(manifest.subjects)} subjects: {manifest.path}")


@_command
def preprocess(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV of the scans to preprocess.")],
    out: Annotated[Path, typer.Argument(help="Folder for the preprocessed scans and manifest.")],
    overwrite: Annotated[bool, typer.Option(help="Redo subjects already done.")] = False,
) -> None:
    """Denoise (CurvatureFlow) and scale atlas-space scans to [0, 1]; write a new manifest."""
    from brainuad.preprocess import preprocess_manifest

    result = preprocess_manifest(manifest, out, overwrite=overwrite,
                                 progress=progress("preprocess"))
    typer.echo(f"preprocessed {len(result.subjects)} subjects: {result.path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
