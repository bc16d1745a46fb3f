"""The `brainuad` application: its options, how a command reports bad input, the panels of
`--help`. The commands are in `use.py` (what a user runs) and `stages.py` (the pipeline's
stages); each parses its options and calls one library function, importing heavy libraries
inside so `--help` stays instant. A `BrainUADError` (bad input) prints as one line and exits 1;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Unsupervised anomaly segmentation in brain MRI: lesions outlined as deviations from "
         "healthy anatomy, without lesion labels.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
_state = {"debug": False}
USE, STAGES = "Use a model", "Pipeline stages (build and evaluate models)"
KeepGoing = Annotated[bool, typer.Option(
    "--keep-going", help="A subject that fails does not stop the others; the failed ones are "
                         "listed at the end (exit code 1).")]


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _command(panel: str) -> Callable:
    """Register a sub-command (its docstring's first line is its summary) whose bad-input
    errors end as one line on stderr, exit code 1; progress is shown while it runs."""

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from brainuad.errors import BrainUADError
            from brainuad.runtime import progress

            progress.enable()
            try:
                return fn(*args, **kwargs)
            except BrainUADError as err:
                if _state["debug"]:
                    raise
                progress.close_all()
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(1) from None

        summary = (fn.__doc__ or "").strip().splitlines()[0]
        return app.command(short_help=summary, rich_help_panel=panel)(wrapper)

    return register


Force = Annotated[bool, typer.Option(
    "--force", help="Redo every output, also those made before with the same scans, model and "
                    "settings (a rerun otherwise skips those and redoes the others, saying why).")]


FullFov = Annotated[bool, typer.Option(
    "--report-full-fov", help="The report's viewer shows the scan's whole field of view (the "
                              "face included); by default the brain and 10 mm around it.")]


NormalSites = Annotated[str | None, typer.Option(
    help="Lesions lying mostly at a healthy FLAIR's normal bright places (ependymal caps, "
         "septum, periaqueductal grey, floor of the fourth ventricle): remove (out of the mask "
         "and the totals; counted in summary.json, outlined in normal_sites_removed.nii.gz) or "
         "flag (kept, named in lesions.csv). Default: the model's (flair-ms: remove; "
         "docs/segment.md).")]


def order_option(value: str | None) -> list[str] | None:
    """`--session-order pre,post` as a list of labels (without `ses-`)."""
    if value is None:
        return None
    labels = [v.strip().removeprefix("ses-") for v in value.split(",") if v.strip()]
    if len(labels) < 2 or len(set(labels)) < len(labels):
        from brainuad.errors import BrainUADError

        raise BrainUADError(f"order {value!r}: give two or more different labels, earliest "
                            "first, separated by commas")
    return labels


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
