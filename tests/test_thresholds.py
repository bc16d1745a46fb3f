"""Label-free thresholds: percentiles and false-positive rates of the training residuals, kept per
scoring (slices, residual) so detection always thresholds what it scores the way it was scored."""

import json

import numpy as np
import pytest

from brainuad import rundir
from brainuad.config import DetectConfig
from brainuad.detect import detect_manifest, load_detector, run_quantiles, score_subject
from brainuad.errors import BrainUADError
from brainuad.manifest import read_manifest
from brainuad.slices import load_subject_slices
from brainuad.training import train
from conftest import tiny_config


@pytest.fixture
def baseline(prepared, tmp_path):
    return train(prepared, tmp_path / "thr", tiny_config("threshold"), progress_bar=False)


def _training_scores(run, prepared, detect):
    cfg, model = load_detector(run)
    subjects = read_manifest(prepared).select(split="train", health="healthy")
    scores = []
    for subject in subjects:
        data = load_subject_slices(subject, "flair", cfg.model.image_size, detect.slices)
        result = score_subject(model, data, detect)
        scores.append(result.score[result.scored])
    return np.concatenate(scores)


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.10])
def test_fpr_threshold_flags_that_fraction_of_the_training_scans(baseline, prepared, fpr):
    cfg, model = load_detector(baseline)
    threshold = run_quantiles(baseline, cfg, model, cfg.detect).at_fpr(fpr)
    scores = _training_scores(baseline, prepared, cfg.detect)
    # the exact statement of a percentile, ties included: at most fpr of the voxels lie above
    # the threshold and at least fpr at or above it (to one voxel)
    step = 1 / scores.size
    assert (scores > threshold).mean() <= fpr + step
    assert (scores >= threshold).mean() >= fpr - step
    assert (scores > threshold).mean() == pytest.approx(fpr, rel=0.25)
    # the run's own 98th percentile is the 2 % one
    assert run_quantiles(baseline, cfg, model, cfg.detect).at_fpr(0.02) == pytest.approx(
        rundir.read_threshold(baseline))


def test_fpr_option_sets_the_mask_threshold(baseline, prepared, tmp_path):
    pred = detect_manifest(baseline, prepared, tmp_path / "p5", split="test", fpr=0.05)
    info = json.loads((pred / "detect.json").read_text())
    assert info["threshold"] == pytest.approx(info["fpr_thresholds"]["0.05"])
    assert info["threshold"] < rundir.read_threshold(baseline)
    with pytest.raises(BrainUADError, match="false-positive rate"):
        detect_manifest(baseline, prepared, tmp_path / "bad", split="test", fpr=5)


def test_other_scoring_is_thresholded_on_the_training_scans(baseline, prepared, tmp_path):
    detect_manifest(baseline, prepared, tmp_path / "brain", split="test")
    pred = detect_manifest(baseline, prepared, tmp_path / "hyper", split="test",
                           residual="hyperintense", slices="paper")
    info = rundir.read_threshold_info(baseline)
    key = DetectConfig(residual="hyperintense", slices="paper").scoring_key
    assert key in info["scorings"]  # computed once, kept in the run
    expected = np.percentile(
        _training_scores(baseline, prepared, DetectConfig(residual="hyperintense",
                                                          slices="paper")), 98)
    assert json.loads((pred / "detect.json").read_text())["threshold"] == pytest.approx(expected)
    with pytest.raises(BrainUADError, match="other settings"):
        detect_manifest(baseline, prepared, tmp_path / "hyper", split="test")


def test_training_on_an_unlabelled_cohort(prepared, tmp_path):
    """`train.subjects: all` learns from every train/val subject whatever its health column."""
    manifest = read_manifest(prepared)
    text = prepared.read_text().replace(",healthy,", ",patient,")
    unlabelled = prepared.with_name("unlabelled.csv")
    unlabelled.write_text(text)
    with pytest.raises(BrainUADError, match="no healthy subjects in the train split"):
        train(unlabelled, tmp_path / "a", tiny_config("threshold"), progress_bar=False)
    run = train(unlabelled, tmp_path / "b", tiny_config("threshold", subjects="all"),
                progress_bar=False)
    trained_on = rundir.read_threshold_info(run)["subjects"]
    assert trained_on == [s.subject for s in manifest.select(split="train")]


def test_threshold_on_a_subset_of_training_subjects(prepared, tmp_path):
    cfg = tiny_config("threshold")
    cfg.detect.threshold_subjects = 2
    run = train(prepared, tmp_path / "few", cfg, progress_bar=False)
    everyone = [s.subject for s in read_manifest(prepared).select(split="train")]
    used = rundir.read_threshold_info(run)["subjects"]
    assert len(everyone) == 3 and used == [everyone[0], everyone[-1]]
