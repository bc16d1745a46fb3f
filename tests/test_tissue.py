"""The tissue score's grey-matter reference: one level per scan, or one that follows a bias."""

import numpy as np

from brainuad.config import DetectConfig
from brainuad.models.tissue.scorer import local_grey_level

LEVELS = {"gm": 1.0, "gm_spread": 0.05}


def _ramp(shape=(60, 50, 40), spacing=(1.0, 1.0, 2.0)):
    """Grey matter whose brightness rises 30 % along x (a bias field), in scattered voxels."""
    rng = np.random.default_rng(0)
    bias = np.linspace(0.85, 1.15, shape[0], dtype=np.float32)[:, None, None] * np.ones(shape)
    values = (bias + rng.normal(0, 0.01, shape)).astype(np.float32)
    grey = rng.random(shape) < 0.3
    return values, grey, np.array(spacing), bias


def test_the_local_level_follows_a_slow_bias_where_one_level_cannot():
    values, grey, spacing, bias = _ramp()
    level = local_grey_level(values, grey, LEVELS, spacing, sigma_mm=10.0)
    assert level.shape == values.shape and level.dtype == np.float32
    inner = (slice(20, 40), slice(15, 35), slice(8, 32))  # 2 sigma from every face
    assert np.abs(level - bias)[inner].max() < 0.01
    assert np.abs(LEVELS["gm"] - bias)[inner].max() > 0.04  # what one level misses


def test_lesions_in_the_grey_matter_do_not_raise_the_level_around_them():
    values, grey, spacing, _ = _ramp()
    clean = local_grey_level(values, grey, LEVELS, spacing, sigma_mm=10.0)
    lesioned = values.copy()
    lesioned[25:35, 20:30, 15:20] = 2.0  # 20 spreads above: trimmed from the reference
    level = local_grey_level(lesioned, grey, LEVELS, spacing, sigma_mm=10.0)
    assert np.abs(level - clean).max() < 0.01


def test_far_from_any_grey_matter_the_scans_level_is_used():
    values, grey, spacing, _ = _ramp()
    grey[:] = False
    grey[:5] = True
    level = local_grey_level(values, grey, LEVELS, spacing, sigma_mm=5.0)
    assert np.allclose(level[-5:], LEVELS["gm"])


def test_a_local_reference_has_its_own_thresholds():
    one, local = DetectConfig(score="tissue"), DetectConfig(score="tissue", reference_mm=20.0)
    assert one.scoring_key("32") != local.scoring_key("32")
    assert "reference_mm" not in one.scoring_key("32")  # existing thresholds keep their key


def test_further_passes_follow_a_bias_that_leaves_grey_matter_beyond_the_trimming():
    """At 0.7-1.3 the ends lie 6 spreads from the scan's level: one pass trims them away and
    keeps its level near the middle's; later passes trim around the local level and follow."""
    values, grey, spacing, _ = _ramp()
    strong = 1 + 2 * (values - 1)
    bias = np.linspace(0.7, 1.3, values.shape[0])[:, None, None]
    ends = (np.r_[6:12, 48:54], slice(15, 35), slice(8, 32))  # 6 mm from the faces
    once = local_grey_level(strong, grey, LEVELS, spacing, sigma_mm=5.0)
    more = local_grey_level(strong, grey, LEVELS, spacing, sigma_mm=5.0, passes=5)
    assert np.abs(once - bias)[ends].max() > 0.1
    assert np.abs(more - bias)[ends].max() < 0.01
    lesioned = strong.copy()
    lesioned[25:35, 20:30, 15:20] = 2.0  # 20 spreads above the local level: still trimmed
    assert np.abs(local_grey_level(lesioned, grey, LEVELS, spacing, sigma_mm=5.0, passes=5)
                  - more).max() < 0.02


def test_the_passes_are_part_of_the_scoring_key():
    one = DetectConfig(score="tissue", reference_mm=10.0)
    assert "passes" not in one.scoring_key("32")  # version 3's thresholds keep their key
    assert one.scoring_key("32") != one.replaced(reference_passes=5).scoring_key("32")
