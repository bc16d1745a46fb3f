import numpy as np
import pytest

from brainuad.errors import BrainUADError
from brainuad.io.images import load_binary, load_image
from brainuad.io.manifest import read_manifest
from brainuad.preprocessing.pipeline import (
    PreprocessConfig,
    mask_from_skull_stripped,
    preprocess_manifest,
)
from conftest import write_nifti

ATLAS = PreprocessConfig(register="never")  # the toy volumes are atlas-space stand-ins


def test_outputs_are_brain_percentiles_to_unit_range_and_masked(tmp_path, cohort):
    """The brain's 0.5th and 99.5th percentiles go to 0 and 1; the voxels brighter than that
    (a small lesion load lies all above it) keep their brightness above 1 unless clipped."""
    out = preprocess_manifest(cohort, tmp_path / "prep", ATLAS)
    clipped = preprocess_manifest(cohort, tmp_path / "clipped",
                                  PreprocessConfig(register="never", keep_bright=False))
    for subject, other in zip(out.subjects, clipped.subjects, strict=True):
        image = load_image(subject.images["flair"])
        mask = load_binary(subject.mask, image).data
        brain = image.data[mask > 0]
        assert image.data.min() >= 0 and np.percentile(brain, 99.5) == pytest.approx(1.0)
        assert brain.max() > 1  # the brightest 0.5 % stay above 1
        assert not image.data[mask == 0].any()
        assert subject.label is not None and subject.label.is_file()
        unit = load_image(other.images["flair"]).data
        assert unit.min() >= 0 and unit.max() == pytest.approx(1.0)
        np.testing.assert_allclose(unit, np.minimum(image.data, 1), atol=1e-6)
    assert read_manifest(out.path).subjects[0].subject == "sub-h00"


def test_skips_done_subjects_and_redoes_partial(tmp_path, cohort):
    out = preprocess_manifest(cohort, tmp_path / "prep", ATLAS)
    first, done = out.subjects[0], out.subjects[1]
    stamp = first.images["flair"].stat().st_mtime_ns
    done_stamp = done.images["flair"].stat().st_mtime_ns
    first.mask.unlink()  # as if killed before the subject finished
    preprocess_manifest(cohort, tmp_path / "prep", ATLAS)
    assert first.mask.exists()
    assert done.images["flair"].stat().st_mtime_ns == done_stamp  # finished: skipped
    assert first.images["flair"].stat().st_mtime_ns != stamp  # cut short: done again


def test_mask_derived_when_absent(tmp_path):
    data = np.zeros((20, 20, 20), np.float32)
    data[4:16, 4:16, 4:16] = 100
    data[9:11, 9:11, 9:11] = 0  # a dark hole inside the brain stays in the mask
    data[0, 0, 0] = -3  # interpolation noise outside
    path = write_nifti(tmp_path / "f.nii.gz", data)
    mask = mask_from_skull_stripped(load_image(path))
    assert mask.sum() == 12 ** 3


def test_modalities_on_different_grids_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    write_nifti(tmp_path / "f.nii.gz", rng.random((10, 10, 10)).astype(np.float32))
    write_nifti(tmp_path / "t.nii.gz", rng.random((10, 10, 12)).astype(np.float32))
    (tmp_path / "m.csv").write_text("subject,split,health,flair,t1\n"
                                    "a,train,healthy,f.nii.gz,t.nii.gz\n")
    with pytest.raises(BrainUADError, match="not on the grid of"):
        preprocess_manifest(tmp_path / "m.csv", tmp_path / "out", ATLAS)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_shards_together_write_the_whole_manifest(tmp_path, cohort):
    whole = read_manifest(cohort)
    first = preprocess_manifest(cohort, tmp_path / "prep", ATLAS, shard_spec="1/2")
    assert first.path.name == "manifest.shard-1-of-2.csv"
    assert not (tmp_path / "prep" / "manifest.csv").exists()  # shard 2 is not done yet
    second = preprocess_manifest(cohort, tmp_path / "prep", ATLAS, shard_spec="2/2")
    names = {s.subject for s in first.subjects} | {s.subject for s in second.subjects}
    assert names == {s.subject for s in whole.subjects}
    merged = read_manifest(tmp_path / "prep" / "manifest.csv")
    assert [s.subject for s in merged.subjects] == [s.subject for s in whole.subjects]


def test_a_subject_done_with_other_settings_or_inputs_is_done_again(cohort, tmp_path):
    """Nothing stale is reused silently: the settings and input files are fingerprinted."""
    import os

    from brainuad.io.images import load_image, save_volume
    from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_manifest

    out = tmp_path / "prep"
    preprocess_manifest(cohort, out, PreprocessConfig(register="never"))
    mask = out / "sub-h00" / "mask.nii.gz"
    first = mask.stat().st_mtime_ns
    preprocess_manifest(cohort, out, PreprocessConfig(register="never"))
    assert mask.stat().st_mtime_ns == first  # same settings, same inputs: skipped
    preprocess_manifest(cohort, out, PreprocessConfig(register="never",
                                                      upper_percentile=99.0))
    second = mask.stat().st_mtime_ns
    assert second > first  # other settings: done again
    image = cohort.parent / "sub-h00" / "flair.nii.gz"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    preprocess_manifest(cohort, out, PreprocessConfig(register="never",
                                                      upper_percentile=99.0))
    assert mask.stat().st_mtime_ns == second  # the same content copied anew: skipped
    volume = load_image(image)
    save_volume(image, volume.data * 1.5, volume.affine)
    preprocess_manifest(cohort, out, PreprocessConfig(register="never",
                                                      upper_percentile=99.0))
    assert mask.stat().st_mtime_ns > second  # a changed input file: done again


def test_denoising_only_the_brains_box_gives_the_whole_images_result_inside_it():
    from brainuad.preprocessing.intensity import denoise

    rng = np.random.default_rng(0)
    data = rng.normal(1.0, 0.2, (40, 44, 36)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[12:30, 10:28, 8:24] = True
    whole = denoise(data, 0.0625, 5)
    boxed = denoise(data, 0.0625, 5, mask)
    assert np.array_equal(boxed[mask], whole[mask])
    assert not np.allclose(whole[mask], data[mask])  # it did smooth
    assert np.array_equal(boxed[0], data[0])  # far outside the box: untouched


@pytest.mark.parametrize("keep_bright", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize("order", ["C", "F"])  # SimpleITK's arrays come transposed: F order
def test_scaling_at_the_brains_voxels_gives_the_whole_grids_values(keep_bright, dtype, order):
    from brainuad.preprocessing.intensity import scale_to_unit

    rng = np.random.default_rng(1)
    data = np.asarray(rng.gamma(2.0, 100.0, (30, 34, 28)).astype(dtype), order=order)
    mask = np.zeros(data.shape, np.uint8)
    mask[5:25, 6:30, 4:20] = 1
    data[0, 0, 0] = np.iinfo(dtype).max if dtype == np.int16 else np.nan  # outside: ignored
    lo, hi = np.percentile(data[mask > 0], [0.5, 99.5])
    whole = np.clip((data - lo) / (hi - lo), 0, None if keep_bright else 1) * (mask > 0)
    whole[0, 0, 0] = 0
    scaled = scale_to_unit(data, mask, keep_bright=keep_bright)
    assert scaled.dtype == np.float32 and scaled.flags[f"{order}_CONTIGUOUS"]
    assert np.array_equal(scaled, whole.astype(np.float32))
    assert (scaled.max() > 1) == keep_bright


@pytest.mark.parametrize("bad, says", [("empty", "mask is empty"), ("nan", "NaN or infinite")])
def test_scaling_refuses_an_empty_brain_and_nans_inside_it(bad, says):
    from brainuad.preprocessing.intensity import scale_to_unit

    data = np.ones((8, 8, 8), np.float32)
    data[2, 2, 2] = 2.0
    mask = np.zeros(data.shape, np.uint8)
    if bad == "nan":
        mask[1:6, 1:6, 1:6] = 1
        data[3, 3, 3] = np.nan
    with pytest.raises(ValueError, match=says):
        scale_to_unit(data, mask)
