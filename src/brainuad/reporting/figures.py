"""The paper's figures: examples of input, score and segmentation (Fig. 5), score histograms of
normal and lesion voxels (Fig. 6), and a grid of a GAN's samples."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainuad.io.files import atomic_path


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
