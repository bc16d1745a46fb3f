import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from brainuad.evaluation.metrics import auprc, auroc, best_dice, dice, lesion_wise, subject_metrics


def test_dice_by_hand():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 0], bool)
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    assert dice(np.ones(3), np.zeros(3)) == 0.0


def test_auc_against_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.random(500) < 0.1
    score = rng.random(500) + truth * 0.5
    assert auroc(score, truth) == pytest.approx(roc_auc_score(truth, score))
    assert auprc(score, truth) == pytest.approx(average_precision_score(truth, score))
    assert np.isnan(auroc(score, np.zeros(500)))


def test_best_dice_finds_the_separating_threshold():
    score = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    truth = np.array([0, 0, 0, 1, 1])
    value, threshold = best_dice(score, truth)
    assert value == pytest.approx(1.0)
    assert 0.3 < threshold <= 0.8
    partial, _ = best_dice(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 0, 1, 0]))
    brute = max(dice(np.array([0.9, 0.8, 0.1, 0.2]) >= t, np.array([1, 0, 1, 0]))
                for t in (0.1, 0.2, 0.8, 0.9))
    assert partial == pytest.approx(brute)


def test_lesion_wise_rates():
    truth = np.zeros((10, 10, 10), bool)
    truth[1:3, 1:3, 1:3] = True  # lesion A
    truth[6:8, 6:8, 6:8] = True  # lesion B
    prediction = np.zeros_like(truth)
    prediction[2, 2, 2] = True  # one voxel of A: A is found
    prediction[4, 0, 9] = True  # a false component
    rates = lesion_wise(prediction, truth)
    assert rates == {"lesions": 2.0, "lesion_recall": 0.5, "lesion_precision": 0.5}


def test_subject_metrics_restricted_to_region():
    truth = np.zeros((6, 6, 6), bool)
    truth[2:4, 2:4, 2:4] = True
    score = truth.astype(float)
    region = np.ones_like(truth)
    region[:, :, 5] = False
    prediction = truth.copy()
    prediction[0, 0, 5] = True  # outside the region: not counted
    m = subject_metrics(score, prediction, truth, region)
    assert m["dice"] == 1.0 and m["auroc"] == 1.0 and m["best_dice"] == pytest.approx(1.0)
    assert m["false_positive_rate"] == 0.0
