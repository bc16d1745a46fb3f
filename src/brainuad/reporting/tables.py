"""Markdown results tables: the paper's Table 1 shape, per model, variant and subject."""

from __future__ import annotations


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


def _outside(r: dict) -> str:
    if "flagged_outside_ml" not in r:
        return "-"
    return f"{r['flagged_outside_ml']['mean']:.2f} ({r.get('flagged_outside_ml_max', 0):.2f})"


def benchmark_table(rows: list[dict]) -> str:
    """Markdown table of evaluate summaries, one row each (with `model`, optional `variant`); the
    Dice at calibration false-positive rates and the dataset-level best Dice (one threshold for
    every subject) appear when the summaries have them."""
    variants = any(r.get("variant") for r in rows)
    fprs, fpr_names = _fpr_columns(rows)
    pooled = any("dataset_best_dice" in r for r in rows)
    healthy = any("healthy_flagged_ml" in r for r in rows)
    outside = any("flagged_outside_ml" in r for r in rows)
    head = ["model", "z", *(["variant"] if variants else []), "Dice", *fpr_names, "AUROC",
            "AUPRC", "best Dice", *(["dataset best Dice"] if pooled else []), "lesion recall",
            *(["flagged outside lesions: ml (max)"] if outside else []),
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
                 *([_outside(r)] if outside else []),
                 *([_flagged(r.get("healthy_flagged_ml"))] if healthy else []),
                 f"{seconds:.4f}" if seconds is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def subject_table(rows: list[dict]) -> str:
    """Markdown table of evaluate's per-subject rows (with `model` and `variant`)."""
    fprs, fpr_names = _fpr_columns(rows)
    keys = ["dice", *fprs, "best_dice", "auroc", "auprc", "lesion_recall", "flagged_outside_ml"]
    names = ["Dice", *fpr_names, "best Dice", "AUROC", "AUPRC", "lesion recall",
             "flagged outside lesions (ml)"]
    lines = ["| model | variant | subject | " + " | ".join(names) + " |",
             "|" + " --- |" * (3 + len(names))]
    for r in rows:
        cells = [f"{float(r[k]):.3f}" if k in r else "-" for k in keys]
        lines.append(f"| {r['model']} | {r.get('variant', '')} | {r['subject']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
