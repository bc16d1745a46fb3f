"""Where detection runs and how split work comes together: the device, shards writing one
folder."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brainuad.commands.cli import app
from brainuad.detection.cohort import DetectOptions, detect_manifest, read_timing
from brainuad.errors import BrainUADError
from brainuad.evaluation.evaluate import evaluate
from brainuad.io.manifest import read_manifest
from brainuad.runtime.devices import device_for
from brainuad.training.train import train
from conftest import tiny_config


def test_shards_sharing_one_folder_equal_one_detect(prepared, tmp_path):
    run = train(prepared, tmp_path / "run", tiny_config("threshold"))
    whole = detect_manifest(run, prepared, tmp_path / "whole", DetectOptions(split="test"))
    shared = tmp_path / "shared"
    for part in ("2/2", "1/2"):  # any order, one after the other or side by side
        detect_manifest(run, prepared, shared, DetectOptions(split="test", shard=part))
    subjects = [s.subject for s in read_manifest(prepared).select(split="test")]
    assert len(subjects) > 1
    for subject in subjects:  # every subject's maps and timings, from whichever shard
        for name in ("score", "mask", "region"):
            a = nib.load(whole / subject / f"{name}.nii.gz").get_fdata()
            b = nib.load(shared / subject / f"{name}.nii.gz").get_fdata()
            np.testing.assert_array_equal(a, b)
        assert read_timing(shared / subject)["slices"] > 0
    assert (json.loads((shared / "detect.json").read_text())
            == json.loads((whole / "detect.json").read_text()))
    summary = evaluate(shared, prepared).summary
    assert summary["subjects"] == len(subjects) and summary["seconds_per_slice"] > 0


def test_accelerator_is_checked_before_any_work():
    assert device_for("cpu").type == "cpu"
    assert device_for("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BrainUADError, match="choose auto, cpu or gpu"):
        device_for("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: --accelerator gpu works")
def test_asking_for_a_gpu_where_there_is_none_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["detect", str(tmp_path / "run"), str(tmp_path / "m.csv"),
                                      "--accelerator", "gpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: accelerator gpu: torch sees no CUDA GPU here" in result.output


def test_workers_write_what_one_process_writes(prepared, tmp_path):
    run = train(prepared, tmp_path / "run", tiny_config("sae16"))
    one = detect_manifest(run, prepared, tmp_path / "one", DetectOptions(split="test"))
    two = detect_manifest(run, prepared, tmp_path / "two", DetectOptions(split="test", workers=2))
    for subject in read_manifest(prepared).select(split="test"):
        for name in ("score", "mask", "region"):
            a = nib.load(one / subject.subject / f"{name}.nii.gz").get_fdata()
            b = nib.load(two / subject.subject / f"{name}.nii.gz").get_fdata()
            np.testing.assert_array_equal(a, b)


def test_evaluation_scores_test_subjects_and_never_training_ones(prepared, tmp_path):
    run = train(prepared, tmp_path / "run", tiny_config("threshold"))
    pred = detect_manifest(run, prepared, tmp_path / "all")  # every split
    test = evaluate(pred, prepared, tmp_path / "e1")
    assert test.summary["split"] == "test" and test.summary["subjects"] == 2
    everything = evaluate(pred, prepared, tmp_path / "e2", split=None)
    trained = [s.subject for s in read_manifest(prepared).select(split="train")]
    assert all(t not in {r["subject"] for r in everything.rows} for t in trained)
    assert any("trained on them" in w and trained[0] in w for w in everything.warnings)
    # the val subject (healthy, not trained on) is scored as a healthy scan: flagged volume
    assert everything.summary["healthy_subjects"] == 1 and "healthy_flagged_ml" in \
        everything.summary
    assert 0 <= test.summary["dataset_best_dice"] <= 1
    assert test.summary["lesion_outside_fraction"] == 0
