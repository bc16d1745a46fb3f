"""The brain-mask morphology is scipy's, only faster: the same masks on shapes where cropping to
the bounding box or labelling the background could differ (holes, masks touching the border,
empty and full arrays, 2D slices)."""

import numpy as np
import pytest
from scipy import ndimage

from brainuad.preprocessing.morphology import (
    bounding_box,
    components,
    dilate,
    erode,
    fill_holes,
)


def _masks():
    rng = np.random.default_rng(3)
    ball = np.linalg.norm(np.indices((24, 26, 22)) - 11.5, axis=0) < 9
    hollow = ball & ~(np.linalg.norm(np.indices((24, 26, 22)) - 11.5, axis=0) < 4)
    touching = np.zeros((12, 13, 14), bool)
    touching[:6, 3:9, 2:] = True
    touching[2:4, 5:7, 5:8] = False  # a hole, and a dent open to the border
    touching[0, 5, 10] = False
    return [ball, hollow, hollow & (rng.random(ball.shape) > 0.05), touching,
            rng.random((20, 21, 22)) > 0.45, rng.random((30, 31)) > 0.4,
            np.zeros((5, 6, 7), bool), np.ones((5, 6, 7), bool)]


@pytest.mark.parametrize("mask", _masks())
def test_morphology_equals_scipy(mask):
    assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    assert np.array_equal(dilate(mask), ndimage.binary_dilation(mask))
    for shape in ((7, 1, 1), (5, 3, 1), (4, 1, 1)):  # a longer reach, an even length
        line = np.ones(shape[:mask.ndim], bool)
        assert np.array_equal(dilate(mask, line), ndimage.binary_dilation(mask, line))
    for iterations in (1, 2, 4):
        assert np.array_equal(erode(mask, iterations),
                              ndimage.binary_erosion(mask, iterations=iterations))
    for full in (False, True):  # the same labels in the same order: lesion numbers follow them
        expected, expected_count = ndimage.label(
            mask, ndimage.generate_binary_structure(mask.ndim, mask.ndim if full else 1))
        # in Fortran order too: the maps on a scan's grid come from SimpleITK transposed
        for layout in (mask, np.asfortranarray(mask), mask.T.copy().T):
            labels, count = components(layout, full)
            assert count == expected_count and np.array_equal(labels, expected)


def test_fill_holes_fills_a_hollow_ball():
    grid = np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0)
    assert fill_holes((grid < 8) & (grid > 3)).sum() == (grid < 8).sum()


def test_bounding_box_holds_every_voxel_and_its_margin():
    mask = np.zeros((10, 12, 14), np.uint8)
    mask[2, 3:5, 13] = 1
    assert bounding_box(mask) == (slice(2, 3), slice(3, 5), slice(13, 14))
    assert bounding_box(mask, 2) == (slice(0, 5), slice(1, 7), slice(11, 14))
    assert bounding_box(np.zeros((3, 3), bool)) is None
