"""Checks on the real MSLUB scans in ../shared/data (marked `realdata`)."""

import numpy as np
import pytest

from brainuad.io import load_binary, load_image
from brainuad.manifest import Subject
from brainuad.preprocess import PreprocessConfig, preprocess_subject
from brainuad.slices import PAPER_SLICES, load_subject_slices, to_volume
from conftest import shared_data

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def patient07(tmp_path_factory):
    folder = shared_data("mslub", "patient07")
    subject = Subject("patient07", "test", "patient", {"flair": folder / "FLAIR.nii.gz"},
                      label=folder / "lesion_mask.nii.gz")
    out = tmp_path_factory.mktemp("prep")
    return preprocess_subject(subject, out, PreprocessConfig(register="never"))


def test_mslub_flair_slices(patient07):
    raw = load_image(patient07.images["flair"])
    assert raw.shape == (182, 218, 182)
    mask = load_binary(patient07.mask, raw)
    # the skull-stripped FLAIR is non-zero on 1.13 M voxels (1 mm): the mask is that region
    nonzero = int((raw.data > 0).sum())
    assert abs(int(mask.data.sum()) - nonzero) < 0.01 * nonzero
    paper = load_subject_slices(patient07, "flair", 256, "paper")
    assert paper.images.shape == (PAPER_SLICES, 256, 256)
    assert not paper.geometry.resampled
    brain = load_subject_slices(patient07, "flair", 256, "brain")
    assert 120 < len(brain.geometry.indices) < 182
    assert brain.images.min() >= 0 and brain.images.max() <= 1
    # the slices carry the brain: most of the mask's voxels, and the volume comes back exactly
    back = to_volume(brain.images, brain.geometry)
    np.testing.assert_array_equal(back, np.clip(raw.data, 0, 1) * mask.data)
    label = load_binary(patient07.label, raw, "label").data
    lesion = back[label > 0]
    assert np.median(lesion) > np.median(back[mask.data > 0])  # lesions are bright on FLAIR
