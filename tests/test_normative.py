"""The voxel-wise normative model: per-voxel mean and spread over the training scans, and the
z-score of a new scan against them."""

import json

import numpy as np
import pytest

from brainuad.detection.calibration import calibrate
from brainuad.detection.cohort import DetectOptions, detect_manifest
from brainuad.errors import BrainUADError
from brainuad.evaluation.evaluate import evaluate
from brainuad.models import folder as rundir
from brainuad.models.common.normative_maps import FILE, Accumulator, Normative
from brainuad.training.train import train
from conftest import tiny_config


def _volume(value, shape=(30, 30, 30)):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    mask = np.zeros(shape, np.uint8)
    mask[5:25, 5:25, 5:25] = 1
    return value * mask.astype(np.float32), mask, affine


def test_zscore_is_distance_from_the_training_mean_in_spreads(tmp_path):
    accumulator = Accumulator()
    for value in (0.4, 0.5, 0.6):
        accumulator.add(*_volume(value))
    model = accumulator.finish()
    image, mask, affine = _volume(0.5)
    image[14:17, 14:17, 14:17] = 0.9  # 4 spreads (0.1) above the mean
    z = model.zscore(image, mask, affine, floor=0.01)
    assert abs(z[15, 15, 15] - 4) < 0.6  # the maps are smoothed, so not exactly 4
    assert np.abs(z[8:12, 8:12, 8:12]).max() < 0.2  # at the mean
    assert z[0, 0, 0] == 0  # outside every training brain: no data, no score
    model.save(tmp_path)
    loaded = Normative.load(tmp_path)
    np.testing.assert_allclose(loaded.zscore(image, mask, affine, 0.01), z, atol=0.02)  # float16
    with pytest.raises(BrainUADError, match="at least two"):
        Accumulator().finish()


def test_accumulators_of_shards_merge_into_the_whole():
    whole, parts = Accumulator(), [Accumulator(), Accumulator()]
    for i, value in enumerate((0.3, 0.5, 0.8)):
        whole.add(*_volume(value))
        parts[i % 2].add(*_volume(value))
    parts[0].merge(parts[1])
    np.testing.assert_allclose(parts[0].sums, whole.sums)


def test_normative_score_finds_the_toy_lesions(prepared, tmp_path):
    cfg = tiny_config("normative")
    cfg.detect.median_size = 3  # a 5^3 median would erase the toy's 4^3 lesions
    run = train(prepared, tmp_path / "maps", cfg)
    assert (run / FILE).is_file()  # the normative kind's fit: its maps
    assert not (run / "model.pt").exists()  # and no network
    assert json.loads((run / "model.json").read_text())["files"] == [
        "config.yaml", FILE, "threshold.json"]
    with pytest.raises(BrainUADError, match="no threshold for the scoring"):
        detect_manifest(run, prepared, tmp_path / "p",
                        DetectOptions(split="test", scoring={"residual": "hyperintense"}))
    with pytest.raises(BrainUADError, match="scores normative, not 'residual'"):
        detect_manifest(run, prepared, tmp_path / "p",
                        DetectOptions(split="test", scoring={"score": "residual"}))
    calibrate(run, settings=[rundir.read_config(run).detect.replaced(residual="hyperintense")])
    pred = detect_manifest(run, prepared, tmp_path / "p",
                           DetectOptions(split="test", scoring={"residual": "hyperintense"}))
    summary = evaluate(pred, prepared).summary
    # (AUROC stays lower: the positive z-score is 0 on most normal voxels, ties count half)
    assert summary["dice"]["mean"] > 0.6 and summary["lesion_recall"]["mean"] == 1
    plain = detect_manifest(run, prepared, tmp_path / "p2", DetectOptions(split="test"))
    summary = evaluate(plain, prepared).summary
    assert summary["dice"]["mean"] > 0.6 and summary["lesion_recall"]["mean"] == 1
