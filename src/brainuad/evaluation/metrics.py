"""Segmentation and detection metrics of unsupervised anomaly detection, per subject.

Voxel-wise AUROC and AUPRC come from scikit-learn. The best Dice over all thresholds is read off
the precision-recall curve (Dice = 2PR / (P + R) at each threshold): the upper bound the UAD
literature reports beside the label-free threshold's Dice. Lesion-wise: a lesion (3D component of
the label, 26-connected) is found if any of its voxels is flagged; a predicted component is a true
positive if it touches any lesion voxel.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from brainuad.preprocessing.morphology import components


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """2|A n B| / (|A| + |B|); 1.0 when both are empty."""
    p, t = prediction.astype(bool), truth.astype(bool)
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2 * (p & t).sum() / total)


def best_dice(score: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Highest voxel Dice reachable by thresholding `score`, and that threshold."""
    truth = truth.astype(bool).ravel()
    if not truth.any():
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(truth, score.ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.nan_to_num(2 * precision * recall / (precision + recall))
    best = int(np.argmax(values[:-1])) if len(thresholds) else 0
    return float(values[best]), float(thresholds[best]) if len(thresholds) else float("nan")


def auroc(score: np.ndarray, truth: np.ndarray) -> float:
    truth = truth.astype(bool).ravel()
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, score.ravel()))


def auprc(score: np.ndarray, truth: np.ndarray) -> float:
    truth = truth.astype(bool).ravel()
    if not truth.any():
        return float("nan")
    return float(average_precision_score(truth, score.ravel()))


def lesion_wise(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Lesion-wise recall (found lesions / lesions) and precision (true components / components)."""
    truth_labels, n_truth = components(truth > 0, full=True)
    pred_labels, n_pred = components(prediction > 0, full=True)
    found = np.unique(truth_labels[(prediction > 0) & (truth_labels > 0)])
    true_pred = np.unique(pred_labels[(truth > 0) & (pred_labels > 0)])
    return {
        "lesions": float(n_truth),
        "lesion_recall": len(found) / n_truth if n_truth else float("nan"),
        "lesion_precision": len(true_pred) / n_pred if n_pred else float("nan"),
    }


def subject_metrics(score: np.ndarray, prediction: np.ndarray, truth: np.ndarray,
                    region: np.ndarray) -> dict[str, float]:
    """All metrics of one subject, over the voxels of `region` (the brain on scored slices)."""
    inside = region > 0
    s, p, t = score[inside], prediction[inside] > 0, truth[inside] > 0
    best, best_threshold = best_dice(s, t)
    return {
        "dice": dice(p, t),
        "auroc": auroc(s, t),
        "auprc": auprc(s, t),
        "best_dice": best,
        "best_threshold": best_threshold,
        **lesion_wise(prediction * inside, truth * inside),
        "lesion_voxels": float(t.sum()),
        "flagged_voxels": float(p.sum()),
        "false_positive_rate": float((p & ~t).sum() / max((~t).sum(), 1)),
    }
