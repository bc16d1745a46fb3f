import nibabel as nib
import numpy as np
import pytest

from brainuad.data.dataset import SliceDataset
from brainuad.data.slices import (
    PAPER_SLICES,
    load_subject_slices,
    plan_slices,
    to_slices,
    to_volume,
)
from brainuad.errors import BrainUADError
from brainuad.io.images import Volume, load_image
from brainuad.io.manifest import read_manifest
from conftest import write_nifti

AFFINES = {
    "RAS": np.diag([1.0, 1.0, 1.0, 1.0]),
    "LAS": np.diag([-1.0, 1.0, 1.0, 1.0]),
    # IXI-like storage: voxel axes are (P, S, R)
    "PSR": np.array([[0, 0, 2.0, 0], [-2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1]]),
}


def _volume(shape, affine, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.random(shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 3:-3, 2:-2] = 1
    return Volume(data * mask, affine), Volume(mask, affine)


@pytest.mark.parametrize("orientation", list(AFFINES))
@pytest.mark.parametrize("mode", ["brain", "paper"])
def test_round_trip_is_exact(orientation, mode):
    volume, mask = _volume((30, 36, 28), AFFINES[orientation])
    geom = plan_slices(mask, size=40, mode=mode)
    slices = to_slices(volume.data, geom)
    assert slices.shape == (len(geom.indices), 40, 40)
    back = to_volume(slices, geom)
    assert back.shape == volume.shape
    ras = nib.orientations.apply_orientation(volume.data, geom.ornt)
    keep = np.zeros(ras.shape[2], bool)
    keep[list(geom.indices)] = True
    ras_back = nib.orientations.apply_orientation(back, geom.ornt)
    np.testing.assert_array_equal(ras_back[:, :, keep], ras[:, :, keep])
    assert not ras_back[:, :, ~keep].any()
    if mode == "brain":
        np.testing.assert_array_equal(back, volume.data)  # every brain slice came back


def test_axial_is_superior_axis_whatever_the_storage():
    volume, mask = _volume((30, 36, 28), AFFINES["PSR"])
    geom = plan_slices(mask, size=40)
    assert geom.ras_shape == (28, 30, 36)  # R from axis 2, A from axis 0, S from axis 1
    assert len(geom.indices) == 36 - 6  # superior axis is voxel axis 1 with brain in 3..32


def test_paper_mode_takes_20_consecutive_middle_slices():
    shape = (20, 20, 60)
    mask = np.zeros(shape, np.uint8)
    mask[5:15, 5:15, 10:50] = 1
    geom = plan_slices(Volume(mask, np.eye(4)), size=32, mode="paper")
    assert geom.indices == tuple(range(19, 19 + PAPER_SLICES))


def test_resampled_round_trip_is_close():
    volume, mask = _volume((60, 64, 10), np.eye(4))
    smooth = np.broadcast_to(np.linspace(0, 1, 64)[None, :, None], (60, 64, 10)).copy()
    geom = plan_slices(mask, size=32)
    assert geom.resampled
    back = to_volume(to_slices(smooth, geom), geom)
    inner = (slice(4, -4), slice(4, -4), list(geom.indices))
    assert np.abs(back[inner] - smooth[inner]).max() < 0.02


def test_bad_mode_and_empty_mask():
    volume, mask = _volume((10, 10, 10), np.eye(4))
    with pytest.raises(BrainUADError, match="slices 'middle'"):
        plan_slices(mask, 16, mode="middle")
    with pytest.raises(BrainUADError, match="brain mask is empty"):
        plan_slices(Volume(np.zeros((10, 10, 10), np.uint8), np.eye(4)), 16)


def test_unscaled_image_is_refused(cohort):
    subject = read_manifest(cohort).subjects[0]
    with pytest.raises(BrainUADError, match="not scaled to \\[0, 1\\].*brainuad preprocess"):
        load_subject_slices(subject, "flair", 32)


def test_dataset_over_preprocessed_subjects(tmp_path, cohort):
    from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_manifest

    manifest = preprocess_manifest(cohort, tmp_path / "prep",
                                   PreprocessConfig(register="never"))
    subjects = manifest.select(health="healthy")
    dataset = SliceDataset(subjects, "flair", 32, "brain")
    expected = sum(len(load_subject_slices(s, "flair", 32).geometry.indices) for s in subjects)
    assert len(dataset) == expected
    item = dataset[0]
    assert item.shape == (1, 32, 32) and 0 <= item.min() and item.max() <= 1
    paper = SliceDataset(subjects, "flair", 32, "paper")
    assert len(paper) == len(subjects) * min(PAPER_SLICES, 20)


def test_missing_mask_is_a_clear_error(tmp_path):
    data = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    write_nifti(tmp_path / "a.nii.gz", data)
    (tmp_path / "m.csv").write_text("subject,split,health,flair\na,train,healthy,a.nii.gz\n")
    subject = read_manifest(tmp_path / "m.csv").subjects[0]
    with pytest.raises(BrainUADError, match="has no brain mask"):
        load_subject_slices(subject, "flair", 16)
    assert load_image(tmp_path / "a.nii.gz").shape == (8, 8, 8)


def test_slice_cache_is_memory_mapped_reused_and_invalidated(tmp_path, cohort):
    import os

    from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_manifest

    manifest = preprocess_manifest(cohort, tmp_path / "prep", PreprocessConfig(register="never"))
    subjects = manifest.select(health="healthy")
    cache = tmp_path / "cache"
    memory = SliceDataset(subjects, "flair", 32)
    mapped = SliceDataset(subjects, "flair", 32, cache=cache)
    assert isinstance(mapped.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(mapped.images), memory.images)
    assert [p.name for p in cache.iterdir()] == [next(cache.iterdir()).name]  # one file, no tmp
    first = next(cache.iterdir())
    stamp = first.stat().st_mtime_ns
    SliceDataset(subjects, "flair", 32, cache=cache)  # reused, not rewritten
    assert first.stat().st_mtime_ns == stamp
    image = subjects[0].images["flair"]
    os.utime(image, ns=(stamp + 10**9, stamp + 10**9))  # a rewritten scan: a new cache entry
    SliceDataset(subjects, "flair", 32, cache=cache)
    assert len(list(cache.iterdir())) == 2
    torch_item = mapped[3]
    assert torch_item.shape == (1, 32, 32) and torch_item.dtype.is_floating_point
