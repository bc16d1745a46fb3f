import numpy as np
import pytest

from brainuad.preprocessing.morphology import eroded_mask
from brainuad.scoring.postprocess import median_filter, remove_small_components, segment


def _blob(n, shape=(12, 12, 12), start=(2, 2, 2)):
    out = np.zeros(shape, bool)
    for i in range(n):  # a row of n voxels
        out[start[0] + i, start[1], start[2]] = True
    return out


def test_five_voxel_component_removed_six_kept():
    five, six = _blob(5), _blob(6, start=(2, 8, 8))
    kept = remove_small_components(five | six, 6)
    assert not kept[five].any()
    assert kept[six].all()
    assert kept.sum() == 6


def test_diagonal_voxels_are_one_component():
    diagonal = np.zeros((8, 8, 8), bool)
    for i in range(6):
        diagonal[i, i, i] = True
    assert remove_small_components(diagonal, 6).sum() == 6


def test_erosion_by_mm():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:18, 2:18, 2:18] = True
    one_mm = eroded_mask(mask, np.array([1.0, 1.0, 1.0]), 3.0)
    assert one_mm.sum() == 10 ** 3
    two_mm = eroded_mask(mask, np.array([2.0, 2.0, 2.0]), 3.0)  # rounds to 2 voxels
    assert two_mm.sum() == 12 ** 3
    assert (eroded_mask(mask, np.ones(3), 0.0) == mask).all()


def test_threshold_and_segment():
    score = np.zeros((10, 10, 10), np.float32)
    score[2:4, 2:4, 2:4] = 0.9  # 8 voxels, above
    score[6, 6, 6:9] = 0.95  # 3 voxels, above but too small
    score[6:8, 0:2, 0:2] = 0.4  # below
    out = segment(score, 0.5, 6)
    assert out.sum() == 8 and out[2:4, 2:4, 2:4].all()


def test_median_removes_isolated_voxels_keeps_blocks():
    stack = np.zeros((12, 12, 12), np.float32)
    stack[0:6, 0:6, 0:6] = 0.5
    stack[2, 2, 2] = 1.0  # a spike inside the block
    stack[9, 9, 9] = 1.0  # an isolated bright voxel
    filtered = median_filter(stack, 5)
    assert filtered[2, 2, 2] == 0.5  # the spike takes the block's value
    assert filtered[9, 9, 9] == 0.0  # the isolated voxel is gone
    assert filtered[1, 1, 1] == 0.5  # edges reflect: the block's corner survives


def test_median_where_matches_scipy_inside_and_is_zero_outside():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    stack = rng.random((9, 12, 11)).astype(np.float32)
    where = rng.random(stack.shape) > 0.4
    where[0], where[:, -1] = True, True  # edges, where the reflection matters
    fast = median_filter(stack, 5, where=where, chunk=37)  # several chunks
    reference = ndimage.median_filter(stack, size=5, mode="reflect")
    np.testing.assert_array_equal(fast[where], reference[where])
    assert not fast[~where].any()


@pytest.mark.parametrize("size", [3, (3, 5, 3), 5])
@pytest.mark.parametrize("positive", [0.3, 0.5, 0.7])
def test_median_of_a_sparse_residual_matches_scipy(size, positive):
    """Residuals are never negative: where at most half a window is positive the median is 0
    and is not computed; everywhere the same values as scipy's."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    stack = np.where(rng.random((10, 14, 13)) < positive, rng.random((10, 14, 13)), 0)
    stack = stack.astype(np.float32)
    where = rng.random(stack.shape) > 0.2
    where[0], where[:, -1] = True, True
    fast = median_filter(stack, size, where=where, chunk=53)
    reference = ndimage.median_filter(stack, size=size, mode="reflect")
    np.testing.assert_array_equal(fast[where], reference[where])
    assert not fast[~where].any() and fast.any()


@pytest.mark.parametrize("kind, bright, dark", [("abs", 0.5, 0.5), ("positive", 0.5, 0.0),
                                                ("hyperintense", 0.5, 0.0)])
def test_residual_kinds_on_a_hand_built_volume(kind, bright, dark):
    from brainuad.scoring.postprocess import residual_map

    image = np.full((3, 8, 8), 0.5, np.float32)
    image[:, 1, 1] = 1.0  # a bright lesion
    image[:, 6, 6] = 0.0  # a dark spot
    image[:, 3, 3] = 0.7  # brighter than the reconstruction, but under the floor
    recon = np.full_like(image, 0.5)
    mask = np.ones_like(image)
    mask[:, 0, :] = 0
    out = residual_map(image, recon, mask, kind, hyper_floor=0.8)
    assert out[0, 1, 1] == pytest.approx(bright)
    assert out[0, 6, 6] == pytest.approx(dark)
    assert out[0, 3, 3] == pytest.approx(0.0 if kind == "hyperintense" else 0.2)
    assert not out[:, 0, :].any()  # nothing outside the brain
