"""Simulated protocol shifts: each changes what it says and nothing else, reproducibly."""

import numpy as np
import pytest

from brainuad.data.shifts import SHIFTS, shifted
from brainuad.errors import BrainUADError
from brainuad.io.images import Volume
from conftest import ellipsoid_brain


def _scan():
    image, _ = ellipsoid_brain((40, 44, 36))
    return Volume(image + 10, np.diag([1.0, 1.0, 1.0, 1.0]))


@pytest.mark.parametrize("shift", SHIFTS)
def test_every_shift_keeps_the_grid_and_is_reproducible(shift):
    scan = _scan()
    a, b = shifted(scan, shift, seed=3), shifted(scan, shift, seed=3)
    assert a.shape == scan.shape and np.array_equal(a.affine, scan.affine)
    np.testing.assert_array_equal(a.data, b.data)
    assert np.isfinite(a.data).all() and a.data.min() >= 0
    assert (shift == "none") == np.array_equal(a.data, scan.data)


def test_thick_slices_blur_through_the_plane_only():
    scan = _scan()
    thick = shifted(scan, "thick_slices").data
    def roughness(data, axis):  # inside the toy brain: its noise, not its edge
        return float(np.abs(np.diff(data[12:-12, 12:-12, 10:-10], axis=axis)).mean())

    assert roughness(thick, 2) < 0.6 * roughness(scan.data, 2)
    assert roughness(thick, 0) > 0.8 * roughness(scan.data, 0)


def test_contrast_changes_the_ratios_of_tissue_levels_monotonically():
    scan = _scan()
    data = shifted(scan, "contrast").data
    order = np.argsort(scan.data.ravel())
    assert (np.diff(data.ravel()[order]) >= -1e-3).all()  # monotone: no tissue swaps places
    low, high = np.percentile(scan.data[scan.data > 10], [10, 90])
    dark, bright = (np.percentile(data[scan.data > 10], q) for q in (10, 90))
    assert dark / bright > low / high  # a gamma below 1: darker tissue relatively brighter


def test_an_unknown_shift_is_refused():
    with pytest.raises(BrainUADError, match="choose one of"):
        shifted(_scan(), "rotate")


@pytest.mark.slow  # four whole segment runs: about 20 s
@pytest.mark.parametrize("contrast, shift, seed", [
    ("flair", "contrast", 2), ("flair3d", "none", 2), ("flair", "bias", 2),
    ("flair3d", "bias", 1),  # a field version 3 flagged 2.6 ml under (version 4: 0.0)
])
def test_a_healthy_scan_under_a_protocol_shift_gets_nearly_nothing_flagged(tmp_path, contrast,
                                                                           shift, seed):
    """The bundled model on a healthy synthetic FLAIR as a scanner hands it over, with another
    tissue contrast (a gamma, a 3D FLAIR's) or a bias field: under 2 ml flagged."""
    from brainuad.commands.segment import SegmentOptions, segment_scans
    from brainuad.data.example import example_scan
    from brainuad.io.images import load_scan, save_volume
    from brainuad.preprocessing.pipeline import PreprocessConfig
    from brainuad.preprocessing.registration import RegistrationConfig

    scan, _ = example_scan(tmp_path, seed=3, resolution=2, lesioned=False, contrast=contrast)
    raw = load_scan(scan)
    moved = save_volume(tmp_path / "shifted" / "healthy_flair.nii.gz",
                        shifted(raw, shift, seed=seed).data, raw.affine)
    quick = PreprocessConfig(registration=RegistrationConfig(
        shrink=(4, 2), smoothing_mm=(2.0, 1.0), iterations=40, sampling=(0.2, 0.05)))
    row = segment_scans([moved], tmp_path / "out", SegmentOptions(accelerator="cpu",
                                                                  preprocess=quick))[0]
    assert row["lesion_volume_ml"] < 2.0, row
