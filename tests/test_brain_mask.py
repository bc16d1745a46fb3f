"""The brain mask from the scan itself (deepbet), the template's as the fallback."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from brainuad.data.example import example_scan
from brainuad.errors import BrainUADError
from brainuad.preprocessing import pipeline
from brainuad.preprocessing.pipeline import PreprocessConfig
from brainuad.preprocessing.registration import RegistrationConfig
from conftest import SHARED_DATA

QUICK = PreprocessConfig(registration=RegistrationConfig(
    shrink=(4, 2), smoothing_mm=(2.0, 1.0), iterations=40, sampling=(0.2, 0.05)))


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return example_scan(tmp_path_factory.mktemp("scan"), resolution=2)[0]


def test_a_mask_that_disagrees_with_the_template_falls_back_to_it(scan, monkeypatch):
    """The scan's own mask where it agrees with the template's; the template's, with the
    reason, where it does not (here a broken outline: a block in a corner of the scan) or where
    deepbet fails."""
    from brainuad.io.images import load_scan

    volume = load_scan(scan)
    own = pipeline.register_volumes({"flair": volume}, "flair", QUICK)
    template = pipeline.register_volumes({"flair": volume}, "flair", PreprocessConfig(
        brain_mask="template", registration=QUICK.registration))

    def corner(volume):
        mask = np.zeros(volume.shape, bool)
        mask[:10, :10, :10] = True
        return mask

    def fails(volume):  # what brain_mask raises when it finds no head
        raise ValueError("not enough foreground to place the brain's box")

    monkeypatch.setattr(pipeline, "scan_brain", fails)
    failed = pipeline.register_volumes({"flair": volume}, "flair", QUICK)
    monkeypatch.setattr(pipeline, "scan_brain", corner)
    fallback = pipeline.register_volumes({"flair": volume}, "flair", QUICK)
    assert own.brain.source == "scan (deepbet)" and own.brain.agreement >= 0.8
    assert template.brain.source == "template" and not template.brain.reason
    assert fallback.brain.source == "template (fallback)" and fallback.brain.agreement < 0.8
    assert "deepbet's mask overlaps the template's" in fallback.brain.reason
    assert _dice(fallback.mask > 0, template.mask > 0) > 0.999  # the same registration's
    assert failed.brain.source == "template (fallback)" and "found no brain" in failed.brain.reason
    assert _dice(failed.mask > 0, template.mask > 0) > 0.999
    assert _dice(own.mask > 0, template.mask > 0) < 0.999  # the scan's own is another outline


def test_the_bundled_networks_outline_what_deepbet_itself_does(scan):
    """deepbet's networks as the bundled ONNX files, its steps in numpy, against deepbet's own
    torch run on the same scan: the same mask but for voxels whose probability the two
    runtimes' float rounding puts either side of 0.5 (on the 21 real scans of ../shared/data
    at most 46 voxels of about a million differ: docs/preprocessing/brain_mask.md)."""
    import warnings

    from deepbet import BrainExtraction

    from brainuad.io.images import load_scan
    from brainuad.preprocessing.brain_mask import NETWORK_SIZE, scan_brain

    volume = load_scan(scan)
    ras = nib.as_closest_canonical(nib.Nifti1Image(volume.data.astype(np.float32),
                                                   volume.affine))
    deepbet = BrainExtraction(no_gpu=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probability = deepbet.run_model(ras.get_fdata(dtype=np.float32).copy(),
                                        shape=(NETWORK_SIZE,) * 3)
    theirs = deepbet.postprocess(probability > 0.5) > 0
    ours = nib.orientations.apply_orientation(
        scan_brain(volume), nib.orientations.ornt_transform(
            nib.io_orientation(volume.affine), nib.orientations.axcodes2ornt("RAS")))
    assert theirs.sum() > 1000 and _dice(ours, theirs) > 0.999  # 17 of 98 000 voxels differ


@pytest.mark.parametrize("n", [37, 128, 181, 256])
def test_nearest_neighbours_are_torchs_nearest_exact(n):
    """deepbet resizes with torch's `nearest-exact`; in float64 some sizes pick another voxel."""
    import torch

    from brainuad.preprocessing.brain_mask import _nearest

    x = np.random.default_rng(0).random((n, 7, 3)).astype(np.float32)
    for shape in [(128, 7, 3), (192, 5, 9), (n + 3, 7, 2)]:
        expected = torch.nn.functional.interpolate(torch.from_numpy(x)[None, None], shape,
                                                   mode="nearest-exact")[0, 0].numpy()
        assert np.array_equal(_nearest(x, shape), expected), shape


def test_a_missing_or_broken_network_file_is_one_line(scan, tmp_path, monkeypatch):
    """A broken install stops the scan with the file's name: never a silent fallback to the
    template's mask (flair-ms's threshold was chosen with deepbet's)."""
    from brainuad.io.images import load_scan
    from brainuad.preprocessing import brain_mask

    monkeypatch.setattr(brain_mask, "DEEPBET", tmp_path)
    monkeypatch.setattr(pipeline, "scan_brain", brain_mask.scan_brain)  # not conftest's stand-in
    brain_mask.extractor.cache_clear()
    try:
        with pytest.raises(BrainUADError, match="bbox_model.onnx: deepbet's network cannot"):
            brain_mask.extractor()
        with pytest.raises(BrainUADError, match="bbox_model.onnx: deepbet's network cannot"):
            pipeline.register_volumes({"flair": load_scan(scan)}, "flair", QUICK)
        for name in brain_mask.NETWORKS:
            (tmp_path / name).write_bytes(b"not an onnx file")
        with pytest.raises(BrainUADError, match="bbox_model.onnx: deepbet's network cannot"):
            brain_mask.extractor()
    finally:
        brain_mask.extractor.cache_clear()


def test_the_brains_box_is_deepbets():
    """deepbet's `get_bbox_with_margin` in numpy: the same box on random coarse masks."""
    import torch
    from deepbet.bet import BrainExtraction

    from brainuad.preprocessing.brain_mask import _box

    deepbet = BrainExtraction.__new__(BrainExtraction)  # its box, without loading its networks
    rng = np.random.default_rng(5)
    for _ in range(200):
        small = np.zeros((128, 128, 128), np.float32)
        low = rng.integers(0, 60, 3)
        high = low + rng.integers(20, 68, 3)  # 2 % of a plane is brain from 18 x 18 voxels
        small[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = 1
        shape = tuple(int(n) for n in rng.integers(40, 400, 3))
        theirs = deepbet.get_bbox_with_margin(torch.from_numpy(small), shape, 0.1)
        ours = _box(small, shape)
        assert [(b.start, b.stop) for b in ours] == [(b.start, b.stop) for b in theirs]


def test_a_failing_network_is_a_runtime_error_the_pipeline_falls_back_from(scan, monkeypatch):
    """onnxruntime raises its own classes, not RuntimeErrors: they become one, which
    `pipeline._scan_mask` meets with the template's mask and the reason (as torch's errors)."""
    from brainuad.io.images import load_scan
    from brainuad.preprocessing import brain_mask

    class Broken:
        def run(self, outputs, feeds):
            raise Exception("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : out of memory")

    monkeypatch.setattr(brain_mask, "extractor", lambda: (Broken(), Broken()))
    with pytest.raises(RuntimeError, match="deepbet's network failed .*out of memory"):
        brain_mask.scan_brain(load_scan(scan))


def test_an_unknown_brain_mask_source_is_refused():
    with pytest.raises(BrainUADError, match="--brain-mask 'atlas'"):
        PreprocessConfig(brain_mask="atlas")


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.realdata
def test_deepbet_outlines_a_raw_flair_and_a_t1_as_the_references_do():
    """deepbet itself on two real scans: a raw 2D FLAIR against the public dataset's brain mask
    (on its common space, carried by the dataset's transform) and an IXI T1 against its
    parcellation (label > 0). Measured 0.966 and 0.982 (docs/preprocessing/brain_mask.md)."""
    from brainuad.io.images import load_scan
    from brainuad.io.sitk import to_sitk
    from brainuad.preprocessing.brain_mask import scan_brain
    from brainuad.preprocessing.transforms import read_transform

    raw = SHARED_DATA / "mslub_longitudinal_raw" / "patient09_study2" / "FLAIR.nii.gz"
    common = SHARED_DATA / "mslub_longitudinal_common" / "patient09"
    t1 = SHARED_DATA / "ixi_t1" / "IXI013"
    if not (raw.exists() and common.exists() and t1.exists()):
        pytest.skip("needs ../shared/data (MSLUB longitudinal, IXI T1)")
    volume = load_scan(raw)
    mask = to_sitk(scan_brain(volume).astype(np.float32), volume.affine)
    reference = sitk.ReadImage(str(common / "brain_mask.nii.gz"))
    carried = sitk.Resample(mask, reference,
                            read_transform(common / "study2_FLAIR_to_common_space.tfm"))
    flair = _dice(sitk.GetArrayFromImage(carried) > 0.5,
                  sitk.GetArrayFromImage(reference) > 0)
    parcellation = np.asarray(nib.load(t1 / "labels_dlmuse.nii.gz").dataobj) > 0
    ixi = _dice(scan_brain(load_scan(t1 / "T1.nii.gz")), parcellation)
    assert flair > 0.95 and ixi > 0.97, (flair, ixi)
