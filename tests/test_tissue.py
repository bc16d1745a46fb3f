"""The tissue score's grey-matter reference: one level per scan, or one that follows a bias."""

import numpy as np
import pytest

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


# --- known answers: a volume built from the atlas's tissues with levels set by hand ---------

CSF, WM, GM, STEP = 0.1, 0.5, 0.7, 0.02


def _by_hand():
    """On the 2 mm atlas grid: CSF at 0.1, white matter (and everything else) at 0.5, atlas
    grey matter at 0.7 - 0.02 / 0.7 / 0.7 + 0.02 in the proportions 3 : 4 : 3 (median 0.7,
    median absolute deviation 0.02), but for 5 % of it darker than halfway between CSF and
    white matter (partial volume: left out of the grey matter's statistics)."""
    from brainuad.preprocessing.atlas import atlas
    from brainuad.preprocessing.tissues import GM_PRIOR, PURE_PRIOR, stats_region

    maps = atlas(2)
    brain = maps["brain"] > 0
    values = np.where(brain, WM, 0).astype(np.float32)
    values[brain & (maps["csf"] > PURE_PRIOR)] = CSF
    spacing = np.full(3, 2.0)
    inner = stats_region(brain, spacing)
    grey = np.flatnonzero(inner & (maps["gm"] > GM_PRIOR))
    dark, rest = grey[: len(grey) // 20], grey[len(grey) // 20:]
    pattern = np.array([-1, -1, -1, 0, 0, 0, 0, 1, 1, 1]) * STEP + GM
    values.ravel()[rest] = pattern[np.arange(len(rest)) % 10]
    values.ravel()[dark] = 0.2
    return values, brain, maps, inner, rest


def test_grey_voxels_are_atlas_grey_matter_brighter_than_halfway_from_csf_to_white():
    from brainuad.io.images import Volume
    from brainuad.preprocessing.tissues import grey_voxels, priors, tissue_levels

    values, brain, maps, inner, rest = _by_hand()
    tissue = priors(Volume(values, maps["affine"]))
    levels = tissue_levels(values, inner, tissue)
    assert levels == pytest.approx({"csf": CSF, "wm": WM, "gm": GM,
                                    "gm_spread": 1.4826 * STEP}, abs=1e-6)
    grey = grey_voxels(values, inner, tissue, levels)
    assert set(np.flatnonzero(grey)) == set(rest)  # the dark 5 % left out


def test_the_tissue_z_is_spreads_above_the_grey_matter():
    """A 3 x 3 x 3 lesion 5 spreads above the grey matter in deep white matter scores 5 at its
    centre (after the 3^3 median); white matter scores 0 (only what is brighter counts)."""
    from brainuad.config import RunConfig
    from brainuad.io.images import Volume
    from brainuad.models.tissue.scorer import TissueScorer
    from brainuad.runtime.clock import Stopwatch

    values, brain, maps, _, _ = _by_hand()
    spread = 1.4826 * STEP
    deep = np.argwhere((maps["wm"] > 0.99) & brain)
    centre = tuple(deep[len(deep) // 2])
    block = tuple(slice(c - 1, c + 2) for c in centre)
    values[block] = GM + 5 * spread
    scorer = TissueScorer(RunConfig(), None, None, None)
    detect = DetectConfig(score="tissue", residual="positive", median_size=3, erosion_mm=3.0)
    scored = scorer.score(Volume(values, maps["affine"]), Volume(brain.astype(np.uint8),
                                                                  maps["affine"]),
                          detect, "32", Stopwatch())
    assert scorer.levels["gm"] == pytest.approx(GM, abs=1e-6)
    assert scored.score[centre] == pytest.approx(5.0, abs=1e-4)
    white = (maps["wm"] > 0.99) & scored.scored
    white[block] = False
    assert np.abs(scored.score[white]).max() == 0.0


def test_hysteresis_keeps_a_component_that_reaches_the_margin_and_drops_one_that_does_not():
    from brainuad.scoring.postprocess import segment

    score = np.zeros((20, 20, 20), np.float32)
    score[2:5, 2:5, 2:5] = 1.8  # above the threshold everywhere, never by the margin
    score[10:14, 10:14, 10:14] = 1.8
    score[12, 12, 12] = 2.7  # reaches threshold + margin at one voxel
    mask = segment(score, threshold=1.6, min_component=6, seed_margin=1.0)
    assert mask[10:14, 10:14, 10:14].all() and not mask[2:5, 2:5, 2:5].any()
    assert segment(score, 1.6, 6, 0.0)[2:5, 2:5, 2:5].all()  # no margin: both kept
    score[12, 12, 12] = 2.6  # exactly threshold + margin is not above it
    assert not segment(score, 1.6, 6, 1.0).any()


@pytest.mark.parametrize(("contrast", "levels", "reads"), [
    ("flair", (0.08, 0.62, 0.45), "flair"),  # synth's FLAIR: CSF, grey, white
    ("flair3d", (0.25, 0.55, 0.50), "flair"),
    ("t1", (0.15, 0.52, 0.78), "t1"),
    ("t2", (1.0, 0.62, 0.48), "t2"),
])
def test_a_scans_contrast_is_told_by_its_tissues_order(contrast, levels, reads):
    from brainuad.preprocessing.atlas import atlas
    from brainuad.preprocessing.tissues import CONTRASTS, contrast_problem, contrast_ratios

    maps = atlas(2)
    image = sum(maps[t] * level for t, level in zip(("csf", "gm", "wm"), levels, strict=True))
    image = image + np.random.default_rng(0).normal(0, 0.01, image.shape) * (maps["brain"] > 0)
    tissue = {t: maps[t] for t in ("csf", "gm", "wm")}
    ratios = contrast_ratios(image, maps["brain"] > 0, tissue, np.full(3, 2.0), contrast)
    assert {m for m in CONTRASTS if contrast_problem(ratios, m) is None} == {reads}
    if reads != "flair":
        said = contrast_problem(ratios, "flair")
        assert said.startswith("its contrast is not a FLAIR's")
        assert said.endswith(f"it looks like a {reads.upper()}")


@pytest.mark.parametrize("shape,factor", [((13, 11, 7), (4, 4, 1)), ((5, 9, 6), (3, 1, 2))])
def test_the_level_is_upsampled_as_torchs_trilinear_interpolation(shape, factor):
    """The local level's linear interpolation in numpy (a tissue model never imports torch)
    is torch's `trilinear` with `align_corners=False`, which it replaced, to float rounding."""
    import torch

    from brainuad.models.tissue.scorer import upsampled

    small = np.random.default_rng(1).random(shape).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(small)[None, None], mode="trilinear", align_corners=False,
        size=tuple(n * f for n, f in zip(shape, factor, strict=True)))[0, 0].numpy()
    got = upsampled(small, np.array(factor))
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
