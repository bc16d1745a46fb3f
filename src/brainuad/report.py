"""Figures (the paper's Fig. 5 and Fig. 6) and the markdown results table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainuad.io import atomic_path


@dataclass
class Example:
    """One axial slice (RAS, x then y) of a subject: image, score, predicted and true masks."""

    subject: str
    image: np.ndarray
    score: np.ndarray
    prediction: np.ndarray
    truth: np.ndarray


def _show(ax, data: np.ndarray, **kwargs) -> None:
    ax.imshow(np.rot90(data), **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def figure_examples(examples: dict[str, list[Example]], path: Path) -> None:
    """Fig. 5: per row a model and subject: input, filtered residual, segmentation over truth
    (green: true positive, red: false positive, blue: missed lesion)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(model, ex) for model, exs in examples.items() for ex in exs]
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for (model, ex), ax in zip(rows, axes, strict=True):
        # [0, 1] for preprocessed slices; a raw scan's own range for registered subjects.
        top = max(float(np.percentile(ex.image, 99.5)), 1.0) if ex.image.max() > 1 else 1.0
        _show(ax[0], ex.image, cmap="gray", vmin=0, vmax=top)
        ax[0].set_ylabel(f"{model}\n{ex.subject}", fontsize=8)
        _show(ax[1], ex.score, cmap="inferno")
        overlay = np.zeros((*ex.image.shape, 4))
        p, t = ex.prediction > 0, ex.truth > 0
        overlay[p & t] = (0, 1, 0, 0.8)
        overlay[p & ~t] = (1, 0, 0, 0.8)
        overlay[~p & t] = (0, 0.4, 1, 0.8)
        _show(ax[2], ex.image, cmap="gray", vmin=0, vmax=top)
        _show(ax[2], overlay)
    for ax, title in zip(axes[0], ("input", "filtered residual", "segmentation vs truth"),
                         strict=True):
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def figure_histograms(scores: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                      thresholds: dict[str, float | None] | None = None) -> None:
    """Fig. 6: histograms of filtered residuals of normal vs lesion voxels, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(scores)
    cols = min(n, 3)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.2 *
                                                                  math.ceil(n / cols)),
                             squeeze=False)
    for ax, (model, (normal, lesion)) in zip(axes.ravel(), scores.items(), strict=False):
        top = max(float(np.percentile(normal, 99.9)) if normal.size else 0,
                  float(np.percentile(lesion, 99)) if lesion.size else 0, 1e-6)
        bins = np.linspace(0, top, 60)
        ax.hist(normal, bins=bins, density=True, alpha=0.6, label="normal")
        ax.hist(lesion, bins=bins, density=True, alpha=0.6, label="lesion")
        threshold = (thresholds or {}).get(model)
        if threshold is not None:
            ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
        ax.set_yscale("log")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("filtered residual")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def figure_samples(images: np.ndarray, path: Path, title: str) -> None:
    """A square grid of generated slices `(N, S, S)`, to judge a GAN epoch by eye."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = math.ceil(math.sqrt(len(images)))
    fig, axes = plt.subplots(side, side, figsize=(1.6 * side, 1.6 * side), squeeze=False)
    for ax, image in zip(axes.ravel(), images, strict=False):
        _show(ax, image, cmap="gray", vmin=0, vmax=1)
    for ax in axes.ravel()[len(images):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _pm(stat: dict) -> str:
    return f"{stat['mean']:.3f} +- {stat['sd']:.3f}"


def results_table(summaries: dict[str, dict]) -> str:
    """Markdown table of summaries (model -> evaluate's summary.json), the paper's Table 1 shape."""
    return benchmark_table([{"model": model, **summary} for model, summary in summaries.items()])


def _fpr_columns(rows: list[dict]) -> tuple[list[str], list[str]]:
    """The `dice_fpr*` keys present in `rows`, in order, and their column titles."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k.startswith("dice_fpr")))
    return keys, [f"Dice @ {k.removeprefix('dice_fpr')} % FPR" for k in keys]


def _flagged(stat: dict | None) -> str:
    return f"{stat['mean']:.2f} ({stat['max']:.2f})" if stat else "-"


def benchmark_table(rows: list[dict]) -> str:
    """Markdown table of evaluate summaries, one row each (with `model`, optional `variant`); the
    Dice at calibration false-positive rates and the dataset-level best Dice (one threshold for
    every subject) appear when the summaries have them."""
    variants = any(r.get("variant") for r in rows)
    fprs, fpr_names = _fpr_columns(rows)
    pooled = any("dataset_best_dice" in r for r in rows)
    healthy = any("healthy_flagged_ml" in r for r in rows)
    head = ["model", "z", *(["variant"] if variants else []), "Dice", *fpr_names, "AUROC",
            "AUPRC", "best Dice", *(["dataset best Dice"] if pooled else []), "lesion recall",
            *(["healthy: flagged ml (max)"] if healthy else []), "s / slice"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        seconds = r.get("seconds_per_slice")
        cells = [r["model"], r.get("z") or "", *([r.get("variant", "")] if variants else []),
                 _pm(r["dice"]), *(_pm(r[k]) if k in r else "-" for k in fprs),
                 _pm(r["auroc"]), _pm(r["auprc"]), _pm(r["best_dice"]),
                 *([f"{r['dataset_best_dice']:.3f}" if "dataset_best_dice" in r else "-"]
                   if pooled else []),
                 _pm(r["lesion_recall"]),
                 *([_flagged(r.get("healthy_flagged_ml"))] if healthy else []),
                 f"{seconds:.4f}" if seconds is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def subject_table(rows: list[dict]) -> str:
    """Markdown table of evaluate's per-subject rows (with `model` and `variant`)."""
    fprs, fpr_names = _fpr_columns(rows)
    keys = ["dice", *fprs, "best_dice", "auroc", "auprc", "lesion_recall"]
    names = ["Dice", *fpr_names, "best Dice", "AUROC", "AUPRC", "lesion recall"]
    lines = ["| model | variant | subject | " + " | ".join(names) + " |",
             "|" + " --- |" * (3 + len(names))]
    for r in rows:
        cells = [f"{float(r[k]):.3f}" if k in r else "-" for k in keys]
        lines.append(f"| {r['model']} | {r.get('variant', '')} | {r['subject']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _png(fig) -> str:
    """A figure as a base64 PNG for an <img> that needs no other file."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, facecolor="black")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _registration_figure(registered: np.ndarray) -> str:
    """The scan as registered to the atlas (before skull stripping), three views, with the
    template's brain outline: a failed registration shows at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainuad.register import from_sitk, template

    brain = from_sitk(template()[1])[0] > 0
    centre = [int(c) for c in np.round(np.argwhere(brain).mean(0))]
    top = float(np.percentile(registered[brain], 99.5)) or 1.0
    views = [(registered[centre[0]], brain[centre[0]], "sagittal"),
             (registered[:, centre[1]], brain[:, centre[1]], "coronal"),
             (registered[:, :, centre[2]], brain[:, :, centre[2]], "axial")]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, (image, outline, title) in zip(axes, views, strict=True):
        ax.imshow(np.rot90(image), cmap="gray", vmin=0, vmax=top)
        ax.contour(np.rot90(outline), levels=[0.5], colors="#00e5ff", linewidths=1.2)
        ax.set_title(title, color="white", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _lesion_figure(raw, lesions: np.ndarray, brain: np.ndarray, count: int = 12) -> str:
    """Axial slices of the scan as acquired (shown in radiological RAS order), the lesion
    outline in red and the scored brain's in blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from brainuad.slices import to_ras

    ornt = nib.orientations.io_orientation(raw.affine)
    image, lesion, scored = (to_ras(v, ornt) for v in (raw.data, lesions, brain))
    with_brain = np.flatnonzero(scored.any(axis=(0, 1)))
    if len(with_brain) == 0:
        with_brain = np.arange(image.shape[2])
    chosen = np.unique(np.linspace(with_brain[0], with_brain[-1], count).round().astype(int))
    top = float(np.percentile(image[scored], 99.5)) if scored.any() else float(image.max())
    # zoomed onto the brain (its bounding box in the slice plane, a little margin)
    inplane = np.argwhere(scored.any(axis=2)) if scored.any() else np.argwhere(
        np.ones(image.shape[:2]))
    lo = np.maximum(inplane.min(0) - 5, 0)
    hi = np.minimum(inplane.max(0) + 6, image.shape[:2])
    crop = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    cols = 3
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.6 * rows), squeeze=False)
    for ax, z in zip(axes.ravel(), chosen, strict=False):
        ax.imshow(np.rot90(image[crop][:, :, z]), cmap="gray", vmin=0, vmax=top or 1.0)
        if scored[crop][:, :, z].any():
            ax.contour(np.rot90(scored[crop][:, :, z]), levels=[0.5], colors="#3d7bff",
                       linewidths=0.6)
        if lesion[crop][:, :, z].any():
            ax.contour(np.rot90(lesion[crop][:, :, z]), levels=[0.5], colors="#ff2020",
                       linewidths=1.0)
        ax.set_title(f"slice {z}", color="white", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def segment_report(path: Path, summary: dict, raw, native: dict[str, np.ndarray],
                   registered: np.ndarray) -> None:
    """report.html of one segmented scan: its figures, what was found, the registration's
    figures and warnings; one file with its images embedded, readable offline."""
    import html

    quality = summary["registration"]
    rows = [("lesions", summary["lesions"]),
            ("total lesion volume", f"{summary['lesion_volume_ml']:.2f} ml"),
            ("brain scored", f"{summary['brain_volume_ml']:.0f} ml"),
            ("model", f"{summary['model']['name']} (version {summary['model']['version']})"),
            ("threshold", f"{summary['threshold']:.4g} ({summary['rule']})"),
            ("registration: brain overlap", f"{quality['brain_dice']:.3f}"),
            ("registration: brain in field of view", f"{quality['coverage']:.3f}"),
            ("registration: scale", f"{quality['scale']:.3f}"),
            ("registration: similarity to the template (Mattes MI)", f"{quality['metric']:.3f}"),
            ("scan grid", " x ".join(map(str, summary["grid"]["shape"])) + " voxels of "
             + " x ".join(f"{s:g}" for s in summary["grid"]["spacing_mm"]) + " mm")]
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                      for k, v in rows)
    warnings = "".join(f"<p class=warn>&#9888; {html.escape(w)}</p>"
                       for w in summary["warnings"])
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>brainuad: {html.escape(summary['scan'])}</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:2em;max-width:1100px}}
th{{text-align:left;padding-right:2em;color:#aaa;font-weight:normal}} img{{width:100%}}
.warn{{background:#5a3b00;padding:.5em}} .note{{color:#999;font-size:.9em}}</style></head>
<body><h1>{html.escape(summary['scan'])}</h1>
<p class=note>{html.escape(summary['input'])}: brainuad {html.escape(summary['brainuad'])}.
For research; not a clinical device.</p>
{warnings}<table>{table}</table>
<h2>Lesions (red) over the scan as acquired</h2>
<p class=note>Blue: the brain mask (the template's brain carried onto the scan's grid); a band
of a few millimetres inside its edge is not scored.</p>
<img alt="lesion outlines" src="data:image/png;base64,{_lesion_figure(raw, native['lesions'],
                                                                      native['brain'])}">
<h2>Registration check</h2>
<p class=note>The scan registered to MNI152, with the template's brain outline (cyan): the
outline should follow the scan's brain. If it does not, the mask above is not to be trusted.</p>
<img alt="registration" src="data:image/png;base64,{_registration_figure(registered)}">
</body></html>
"""
    from brainuad.io import write_text

    write_text(path, page)
