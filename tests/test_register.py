import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from brainuad.errors import BrainUADError
from brainuad.evaluation.metrics import dice
from brainuad.io.manifest import Subject
from brainuad.io.sitk import from_sitk, to_sitk
from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_subject
from brainuad.preprocessing.registration import RegistrationConfig, register
from brainuad.preprocessing.transforms import (
    affine_transform,
    maps_to_native,
    matrix,
    read_transform,
    resample,
    to_native,
    write_transform,
)
from conftest import write_nifti


def _grid(shape, spacing, origin) -> sitk.Image:
    image = sitk.Image([int(n) for n in shape], sitk.sitkFloat32)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    return image


def test_sitk_round_trip_keeps_data_and_world_coordinates():
    affine = np.array([[-0.9, 0, 0, 90], [0, 0, 3.0, -40], [0, 1.1, 0, -100], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    image = to_sitk(data, affine)
    back, back_affine = from_sitk(image)
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine, atol=1e-6)
    lps = np.array(image.TransformIndexToPhysicalPoint((1, 2, 3)))
    ras = affine @ [1, 2, 3, 1]
    np.testing.assert_allclose(lps * [-1, -1, 1], ras[:3], atol=1e-5)


def test_matrix_and_affine_transform_map_points_alike():
    euler = sitk.Euler3DTransform((10, -5, 3), 0.1, -0.2, 0.05, (4, 5, -6))
    flat = affine_transform(matrix(euler))
    for point in [(0, 0, 0), (30, -20, 15)]:
        np.testing.assert_allclose(flat.TransformPoint(point), euler.TransformPoint(point),
                                   atol=1e-9)


def test_label_round_trips_between_raw_and_atlas_grids():
    raw = _grid((90, 90, 24), (0.9, 0.9, 3.0), (-40, -40, -36))
    atlas = _grid((80, 80, 72), (1.0, 1.0, 1.0), (-40, -40, -36))
    label = np.zeros((90, 90, 24), np.float32)
    label[25:65, 30:60, 6:18] = 1
    label = ndimage.gaussian_filter(label, (3, 3, 1)) > 0.5
    raw_label = to_sitk(label.astype(np.float32), from_sitk(raw)[1])
    atlas_to_raw = affine_transform(np.array([[0.95, 0.05, 0, 2], [-0.04, 1.02, 0.03, -3],
                                              [0, 0.02, 1.05, 1.5], [0, 0, 0, 1]]))
    on_atlas = resample(raw_label, atlas, atlas_to_raw, nearest=True)
    data, affine = from_sitk(on_atlas)
    back = to_native(data, affine, raw, atlas_to_raw, nearest=True) > 0.5
    assert dice(back, label) > 0.95


def test_the_maps_go_to_the_scan_grid_in_one_resampling_as_in_one_each():
    """maps_to_native packs the masks and label codes into one image for one nearest-neighbour
    resampling: each comes out as its own resampling gives it."""
    rng = np.random.default_rng(2)
    raw = _grid((50, 44, 12), (0.9, 0.9, 3.0), (-22, -20, -18))
    atlas_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    atlas_affine[:3, 3] = (-25, -24, -20)
    shape = (50, 48, 40)
    maps = {"score": rng.random(shape).astype(np.float32), "lesions": rng.random(shape) > 0.7,
            "sites": rng.integers(0, 5, shape).astype(np.uint8),
            "brain": ndimage.gaussian_filter(rng.random(shape), 3) > 0.5}
    atlas_to_raw = affine_transform(np.array([[0.97, 0.04, 0, 1.5], [-0.03, 1.01, 0.02, -2],
                                              [0, 0.01, 1.04, 0.5], [0, 0, 0, 1]]))
    together = maps_to_native(maps, atlas_affine, raw, atlas_to_raw)
    assert list(together) == list(maps)
    for name, value in maps.items():
        alone = to_native(np.asarray(value, np.float32), atlas_affine, raw, atlas_to_raw,
                          nearest=name != "score")
        assert together[name].dtype == np.float32 and together[name].shape == alone.shape
        np.testing.assert_array_equal(together[name], alone, err_msg=name)
    assert together["sites"].max() == 4 and together["lesions"].any()
    odd = {"fraction": rng.random(shape).astype(np.float32), "empty": np.zeros(shape, bool),
           "nan": np.full(shape, np.nan, np.float32), "codes": maps["sites"].astype(np.float64)}
    together = maps_to_native(odd, atlas_affine, raw, atlas_to_raw)  # fractions, NaN: alone
    for name, value in odd.items():
        alone = to_native(np.asarray(value, np.float32), atlas_affine, raw, atlas_to_raw,
                          nearest=True)
        np.testing.assert_array_equal(together[name], alone, err_msg=name)


def test_register_recovers_a_known_affine():
    """The 2 mm MNI152 template (shipped in nilearn) moved by a known affine."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=2)
    data = t1.get_fdata(dtype=np.float32)
    fixed = to_sitk(data, t1.affine)
    known = np.array([[1.03, 0.02, 0, 3.0], [-0.02, 0.98, 0.03, -2.0], [0, -0.03, 1.0, 2.5],
                      [0, 0, 0, 1]])
    moving = sitk.Resample(fixed, fixed, affine_transform(np.linalg.inv(known)),
                           sitk.sitkLinear, 0.0)  # moving(known(p)) == fixed(p)
    cfg = RegistrationConfig(shrink=(2, 1), smoothing_mm=(2.0, 0.0), sampling=0.05)
    found = matrix(register(fixed, moving, cfg, "template"))
    points = np.array([fixed.TransformIndexToPhysicalPoint([int(i) for i in index])
                       for index in np.argwhere(data > 0.3 * data.max())[::100]])
    points = np.c_[points, np.ones(len(points))]
    error = np.linalg.norm((points @ found.T - points @ known.T)[:, :3], axis=1).mean()
    assert error < 1.0  # mm, on 2 mm voxels


def test_transform_files_round_trip_and_garbage_is_refused(tmp_path):
    transform = affine_transform(np.array([[1.1, 0, 0, 1], [0, 0.9, 0, 2], [0, 0, 1, 3],
                                           [0, 0, 0, 1]]))
    path = write_transform(tmp_path / "t.tfm", transform)
    np.testing.assert_allclose(matrix(read_transform(path)), matrix(transform))
    assert not list(tmp_path.glob(".*"))  # no temporary left behind
    (tmp_path / "bad.tfm").write_text("import os; os.system('touch pwned')\n")
    with pytest.raises(BrainUADError, match="bad.tfm: not a readable ITK"):
        read_transform(tmp_path / "bad.tfm")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("problem", ["nan", "2d", "garbage"])
def test_registration_path_gives_clear_errors_on_bad_input(tmp_path, problem):
    path = tmp_path / "flair.nii.gz"
    if problem == "garbage":
        path.write_bytes(b"not a nifti at all")
    else:
        data = np.random.default_rng(0).random((20, 20, 20) if problem == "nan" else (20, 20))
        if problem == "nan":
            data[3, 3, 3] = np.nan
        nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    subject = Subject("s", "train", "healthy", {"flair": path})
    with pytest.raises(BrainUADError, match="flair.nii.gz"):
        preprocess_subject(subject, tmp_path / "out", PreprocessConfig(register="always"))
    assert not (tmp_path / "out" / "s" / "mask.nii.gz").exists()


def test_atlas_grid_scans_are_not_registered(tmp_path):
    from brainuad.io.images import load_image
    from brainuad.preprocessing.atlas import atlas, on_template_grid

    grid = atlas(2)
    path = write_nifti(tmp_path / "a.nii.gz", grid["wm"] * 100, grid["affine"])
    assert on_template_grid(load_image(path))
    other = write_nifti(tmp_path / "b.nii.gz", grid["wm"][:-1] * 100, grid["affine"])
    assert not on_template_grid(load_image(other))


def test_the_rough_brain_of_a_noisy_scan_is_the_head_not_nothing():
    """Noise at a quarter of the head's level pits the foreground everywhere; the rough brain
    (the registration's start) must still be the head, not empty (which ended a low-SNR
    FLAIR's preprocessing with "no centre of mass")."""
    from brainuad.preprocessing.registration import rough_brain

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 64)] * 3, indexing="ij"))
    head = (grid ** 2).sum(0) < 0.6
    rng = np.random.default_rng(0)
    data = np.abs(100.0 * head + rng.normal(0, 25, head.shape)).astype(np.float32)
    found = from_sitk(rough_brain(to_sitk(data, np.diag([1.0, 1.0, 1.0, 1.0]))))[0] > 0
    assert dice(found, head) > 0.9


def test_a_fine_scan_is_binned_to_about_2_mm_and_a_2_mm_scan_is_left_alone():
    from brainuad.preprocessing.atlas import template
    from brainuad.preprocessing.registration import coarse, working_template

    fine = _grid((300, 380, 40), (0.57, 0.57, 3.3), (-80, -100, -60))
    binned = coarse(fine, 2.0)
    assert binned.GetSize() == (75, 95, 40)
    assert np.allclose(binned.GetSpacing(), (2.28, 2.28, 3.3))
    two_mm = _grid((90, 105, 90), (2.0, 2.0, 2.0), (0, 0, 0))
    assert coarse(two_mm, 2.0) is two_mm
    image, region = working_template(2.0)  # the 1 mm template binned the same way
    assert np.allclose(image.GetSpacing(), 2.0)
    assert image.GetSize() == tuple(n // 2 for n in template()[0].GetSize())
    assert region.GetSize() == image.GetSize() and sitk.GetArrayViewFromImage(region).any()


def test_the_atlas_is_nilearns_without_importing_its_datasets_module():
    """The MNI152 maps are read as nilearn's loaders read them, without the 3 s import."""
    import subprocess
    import sys

    code = ("import sys; from brainuad.preprocessing.atlas import atlas, template; "
            "template(); atlas(1); assert 'nilearn.datasets' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    from nilearn import datasets

    from brainuad.preprocessing.atlas import atlas, template

    maps = atlas(1)
    assert np.array_equal(maps["gm"], np.clip(datasets.load_mni152_gm_template(
        resolution=1).get_fdata(dtype=np.float32), 0, 1))
    mask = datasets.load_mni152_brain_mask(resolution=1)
    assert np.array_equal(from_sitk(template()[1])[0] > 0, mask.get_fdata() > 0.5)
    assert np.allclose(maps["affine"], mask.affine)


def test_the_field_of_view_is_where_the_scan_holds_data():
    """Slices left empty (a field of view that missed the lowest part of the head) are outside
    it; a scan with noise everywhere, or nothing at all, is its whole grid."""
    from brainuad.preprocessing.registration import field_of_view

    rng = np.random.default_rng(0)
    data = np.abs(rng.normal(0, 1, (20, 24, 30))).astype(np.float32) + 0.1
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    whole = from_sitk(field_of_view(to_sitk(data, affine)))[0]
    assert whole.all()
    data[:, :, :9] = 0  # the lowest 30 % of the slices
    data[:3] = 0  # and a border of empty columns
    cut = from_sitk(field_of_view(to_sitk(data, affine)))[0] > 0
    expected = np.zeros(data.shape, bool)
    expected[3:, :, 9:] = True
    np.testing.assert_array_equal(cut, expected)
    assert from_sitk(field_of_view(to_sitk(np.zeros((4, 4, 4)), affine)))[0].all()


def test_n4_shrinks_a_thin_slab_less_and_still_flattens_its_bias():
    """N4 fits on a copy shrunk `n4_shrink` times per axis, but an axis of few voxels keeps two
    (a 5-slice slab shrunk 6 times had none and N4 refused it); the bias still comes off."""
    from brainuad.preprocessing.bias import head_mask, n4, shrink_factors

    assert shrink_factors((320, 320, 48), 6) == [6, 6, 6]
    assert shrink_factors((96, 96, 5), 6) == [6, 6, 2]
    assert shrink_factors((96, 1, 3), 6) == [6, 1, 1]
    grid = np.indices((96, 96, 5)).astype(np.float32)
    head = ((grid[0] - 48) ** 2 + (grid[1] - 48) ** 2) < 40**2
    bias = np.exp(0.3 * (grid[0] - 48) / 48)  # a smooth left-right gain of +-35 %
    image = to_sitk(np.where(head, 100.0 * bias, 0).astype(np.float32), np.eye(4))
    corrected = from_sitk(n4(image, head_mask(image), RegistrationConfig(n4_shrink=6)))[0]
    inside = corrected[head]
    before = (100.0 * bias)[head]
    assert inside.std() / inside.mean() < 0.5 * before.std() / before.mean()
