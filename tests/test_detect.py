"""Detection outputs when the work is split: shards writing one folder, evaluated as one."""

import json

import nibabel as nib
import numpy as np

from brainuad.detect import detect_manifest, read_timing
from brainuad.evaluate import evaluate
from brainuad.manifest import read_manifest
from brainuad.training import train
from conftest import tiny_config


def test_shards_sharing_one_folder_equal_one_detect(prepared, tmp_path):
    run = train(prepared, tmp_path / "run", tiny_config("threshold"), progress_bar=False)
    whole = detect_manifest(run, prepared, tmp_path / "whole", split="test")
    shared = tmp_path / "shared"
    for part in ("2/2", "1/2"):  # any order, one after the other or side by side
        detect_manifest(run, prepared, shared, split="test", shard_spec=part)
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
