"""`brainuad segment`: a raw-like scan in, its lesion mask, score, lesion table, summary and QC
report out on the scan's own grid; NIfTI and DICOM alike; the model folder only read."""

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from brainuad.commands.cli import app
from brainuad.commands.segment import SegmentOptions, segment_scans
from brainuad.data.example import example_scan
from brainuad.io.images import LPS_RAS, SWAP, dicom_series, slices_reversed
from brainuad.io.scans import find_scans
from brainuad.preprocessing.normal_sites import SITES
from brainuad.preprocessing.pipeline import PreprocessConfig
from brainuad.preprocessing.registration import RegistrationConfig
from brainuad.training.train import train
from conftest import fetched_urls, tiny_config, write_enhanced, write_series

#: Registration cut to two coarse levels: these tests check the plumbing, not its accuracy
#: (benchmarks/registration.py and the realdata tests do that on real scans).
QUICK = PreprocessConfig(registration=RegistrationConfig(
    shrink=(4, 2), smoothing_mm=(2.0, 1.0), iterations=40, sampling=(0.2, 0.05)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny trained model in a run directory (the bundled models' format)."""
    from brainuad.preprocessing.pipeline import preprocess_manifest
    from conftest import make_cohort

    root = tmp_path_factory.mktemp("model")
    prepared = preprocess_manifest(make_cohort(root / "cohort"), root / "prep",
                                   PreprocessConfig(register="never")).path
    return train(prepared, root / "run", tiny_config("sae16"))


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return example_scan(tmp_path_factory.mktemp("scan"), resolution=2)


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_segment_writes_every_output_on_the_scan_grid(model, scan, tmp_path):
    raw, _ = scan
    before = _snapshot(model)
    modes = {p: p.stat().st_mode for p in [model, *model.rglob("*")]}
    for p in modes:  # the model folder is read-only, as in site-packages
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        rows = segment_scans([raw], tmp_path / "out",
                             SegmentOptions(model, "cpu", preprocess=QUICK))
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)
    assert _snapshot(model) == before
    folder = tmp_path / "out" / "example_flair"
    source = nib.load(raw)
    for name in ("lesion_mask", "anomaly_score", "brain_mask"):
        image = nib.load(folder / f"{name}.nii.gz")
        assert image.shape == source.shape
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
    mask = np.asarray(nib.load(folder / "lesion_mask.nii.gz").dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    voxel_ml = abs(np.linalg.det(source.affine[:3, :3])) / 1000
    with open(folder / "lesions.csv") as handle:
        lesions = list(csv.DictReader(handle))
    assert sum(float(r["volume_ml"]) for r in lesions) == pytest.approx(mask.sum() * voxel_ml,
                                                                        abs=1e-3)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["lesions"] == len(lesions) == rows[0]["lesions"]
    assert summary["scan"] == folder.name
    assert summary["lesion_volume_ml"] == pytest.approx(mask.sum() * voxel_ml)
    # each lesion says whether it lies at a normal-variant site; with "flag" (this model's
    # default) those are counted, not removed
    assert all(r["site"] in ("", *SITES.values()) for r in lesions)
    at_sites = [r for r in lesions if r["site"]]
    assert summary["at_normal_variant_sites"]["lesions"] == len(at_sites)
    assert set(summary["registration"]) == {"brain_dice", "coverage", "scale", "rotation",
                                            "metric"}
    assert {"read", "preprocess", "score", "write", "report", "total"} <= set(
        summary["seconds"])
    # the preprocessing's own steps, for the speed figures
    assert {"N4", "registration", "resampling", "brain mask",
            "denoising, scaling"} <= set(summary["preprocess_seconds"])
    assert summary["model"]["folder"] == str(model)
    assert summary["brain_mask"]["source"] == "scan (deepbet)"  # the scan's own outline
    page = (folder / "report.html").read_text()
    assert "scan (deepbet)" in page
    assert page.count('src="data:image/png;base64,') == 1  # the registration check
    assert 'id="viewer"' in page and 'id="viewer-data"' in page  # the slice viewer
    assert not fetched_urls(page)  # opens offline: nothing to fetch
    assert len((tmp_path / "out" / "summary.csv").read_text().splitlines()) == 2
    # a second call finds the scan done and writes nothing new
    stamp = (folder / "lesion_mask.nii.gz").stat().st_mtime_ns
    segment_scans([raw], tmp_path / "out", SegmentOptions(model, "cpu", preprocess=QUICK))
    assert (folder / "lesion_mask.nii.gz").stat().st_mtime_ns == stamp
    # lesions at normal bright places taken out: made again (other settings), counted apart
    assert summary["at_normal_variant_sites"]["removed"] is None  # the model's "flag"
    segment_scans([raw], tmp_path / "out", SegmentOptions(model, "cpu", preprocess=QUICK,
                                                          normal_sites="remove"))
    assert (folder / "lesion_mask.nii.gz").stat().st_mtime_ns != stamp
    removed = json.loads((folder / "summary.json").read_text())
    left_out = removed["at_normal_variant_sites"]["removed"]
    outside = np.asarray(nib.load(folder / "normal_sites_removed.nii.gz").dataobj) > 0
    kept = np.asarray(nib.load(folder / "lesion_mask.nii.gz").dataobj) > 0
    assert not (outside & kept).any() and "normal_sites_removed.nii.gz" in removed["outputs"]
    assert removed["scan"] == folder.name
    assert left_out["volume_ml"] == pytest.approx(outside.sum() * voxel_ml, abs=1e-4)
    assert left_out["lesions"] > 0 or not outside.any()  # (a tiny one may vanish on the way)
    assert "left out of the mask and the totals" in (folder / "report.html").read_text()


def test_a_dicom_series_gives_the_nifti_result(model, scan, tmp_path):
    raw, _ = scan
    image = sitk.Cast(sitk.ReadImage(str(raw)), sitk.sitkInt16)
    series = tmp_path / "dicom"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    for z in range(image.GetDepth()):
        piece = image[:, :, z]
        origin = image.TransformIndexToPhysicalPoint((0, 0, z))
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in origin))
        piece.SetMetaData("0020|0037", "\\".join(f"{v:.6f}" for v in (
            direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])))
        piece.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")
        piece.SetMetaData("0020|0013", str(z))
        piece.SetMetaData("0008|0060", "MR")
        piece.SetMetaData("0018|0050", f"{image.GetSpacing()[2]:.6f}")
        writer.SetFileName(str(series / f"{z:03d}.dcm"))
        writer.Execute(piece)
    assert [name for name, _ in find_scans([series], "flair")] == ["dicom"]
    segment_scans([raw, series], tmp_path / "out", SegmentOptions(model, "cpu", preprocess=QUICK))
    nifti = nib.load(tmp_path / "out" / "example_flair" / "lesion_mask.nii.gz")
    dicom = nib.load(tmp_path / "out" / "dicom" / "lesion_mask.nii.gz")
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(dicom.dataobj), np.asarray(nifti.dataobj))


def test_a_dicom_series_gets_its_lesions_back_as_a_dicom_seg_on_it(scan, tmp_path):
    """Issue 41: the lesion mask of a DICOM series also as a DICOM Segmentation on that series
    (the shipped model, which finds the example's lesions): frame by source slice the NIfTI
    mask's voxels; a NIfTI input gets none. The same FLAIR as one multi-frame file: the
    lesions of its single-frame form, and a SEG that holds its mask voxel for voxel."""
    import highdicom as hd
    import pydicom

    raw, _ = scan
    series = tmp_path / "dicom"
    write_series(sitk.ReadImage(str(raw)), series)
    # a study export: a localizer beside the FLAIR, which is taken by its description
    write_series(sitk.GetImageFromArray(np.ones((3, 8, 8), np.int16)), series, number=9,
                 description="LOCALIZER")
    enhanced = tmp_path / "enhanced"
    write_enhanced(dicom_series(series), enhanced)
    segment_scans([raw, series, enhanced], tmp_path / "out",
                  SegmentOptions(accelerator="cpu", preprocess=QUICK))
    mask = np.asarray(nib.load(tmp_path / "out" / "dicom" / "lesion_mask.nii.gz").dataobj)
    assert mask.any()
    seg = hd.seg.segread(tmp_path / "out" / "dicom" / "lesion_seg.dcm")
    algorithm = seg.get_segment_description(1).algorithm_identification[0]
    assert algorithm.AlgorithmName == "brainuad flair-ms"
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in dicom_series(series)]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               combine_segments=True, relabel=False)
    np.testing.assert_array_equal(frames.transpose(2, 1, 0), mask)
    summary = json.loads((tmp_path / "out" / "dicom" / "summary.json").read_text())
    assert "lesion_seg.dcm" in summary["outputs"]
    assert summary["dicom_series"]["description"] == "AX FLAIR"
    assert not (tmp_path / "out" / "example_flair" / "lesion_seg.dcm").exists()
    multi = json.loads((tmp_path / "out" / "enhanced" / "summary.json").read_text())
    assert multi["dicom_series"]["frames"] == mask.shape[2]
    # the same voxels in (tests/test_dicom_seg.py), the same lesions out, to within what ITK's
    # multi-threaded registration moves between two runs (0.05 % of the voxels here)
    enhanced_mask = np.asarray(
        nib.load(tmp_path / "out" / "enhanced" / "lesion_mask.nii.gz").dataobj)
    assert multi["lesions"] == summary["lesions"]
    assert (enhanced_mask != mask).mean() < 0.001
    seg = hd.seg.segread(tmp_path / "out" / "enhanced" / "lesion_seg.dcm")
    volume = seg.get_volume(combine_segments=True)
    back = volume.array.transpose(2, 1, 0)  # (slice, row, column) -> the scan's grid
    if slices_reversed(LPS_RAS @ volume.affine @ SWAP):
        back = back[:, :, ::-1]
    np.testing.assert_array_equal(back > 0, enhanced_mask > 0)


def test_scan_names_that_differ_only_in_case_are_refused(tmp_path):
    for name in ("Scan.nii.gz", "scan.nii.gz"):
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / name)
    result = CliRunner().invoke(app, ["segment", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "differ by more than case" in result.output and not (tmp_path / "o").exists()


def test_files_of_the_same_name_are_named_by_their_folders(tmp_path):
    for folder in ("p1", "p2"):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)),
                 tmp_path / folder / "FLAIR.nii.gz")
    names = [name for name, _ in find_scans([tmp_path / "p1" / "FLAIR.nii.gz",
                                             tmp_path / "p2" / "FLAIR.nii.gz"], "flair")]
    assert names == ["p1_FLAIR", "p2_FLAIR"]


def test_the_bundled_model_on_the_example_an_in_distribution_self_check(scan, tmp_path):
    """`flair-ms` ships inside the package: listed with its kind, modality and polarity,
    loadable by name, read-only, and on the example it outlines the lesions. The example comes
    from the generator whose scans helped choose the model's operating point: a check that the
    shipped folder works end to end, not an accuracy figure (real scans: test_realdata)."""
    from brainuad.evaluation.metrics import dice
    from brainuad.models.bundled import DEFAULT, available

    assert DEFAULT in [m.info.name for m in available()]
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0 and "flair-ms (default)" in result.output
    assert "tissue model of FLAIR, bright lesions" in result.output
    raw, truth = scan
    rows = segment_scans([raw], tmp_path, SegmentOptions(accelerator="cpu", preprocess=QUICK))
    found = np.asarray(nib.load(tmp_path / "example_flair" / "lesion_mask.nii.gz").dataobj)
    known = np.asarray(nib.load(truth).dataobj)
    assert rows[0]["lesions"] > 0 and dice(found > 0, known > 0) > 0.6


def test_a_model_without_a_network_segments_without_importing_torch(scan, tmp_path):
    """Importing torch is 1.3-1.5 s of a process's start on a 2-core machine (docs/speed.md):
    `segment` with the bundled tissue model runs in a process where any import of it fails."""
    import subprocess
    import sys

    raw, _ = scan
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
from brainuad.commands.segment import SegmentOptions, segment_scans
from brainuad.preprocessing.pipeline import PreprocessConfig
from brainuad.preprocessing.registration import RegistrationConfig
quick = PreprocessConfig(registration=RegistrationConfig(
    shrink=(4, 2), smoothing_mm=(2.0, 1.0), iterations=40, sampling=(0.2, 0.05)))
rows = segment_scans([{str(raw)!r}], {str(tmp_path)!r}, SegmentOptions(preprocess=quick))
print("lesions", rows[0]["lesions"])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lesions" in result.stdout and (tmp_path / "example_flair" / "report.html").is_file()


def test_a_scan_of_another_modality_is_refused_in_one_line(model, tmp_path):
    t1 = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), t1)
    result = CliRunner().invoke(app, ["segment", str(t1), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "its name says t1, and the model reads flair" in result.output
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"subject,split,health,t1\ns1,test,patient,{t1.name}\n")
    result = CliRunner().invoke(app, ["segment", str(manifest), "--out", str(tmp_path / "o"),
                                      "--model", str(model)])
    assert result.exit_code == 1 and "no flair column, and the model reads flair" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("field", ["kind", "polarity", "files", "licence"])
def test_a_model_json_missing_a_field_is_one_line(model, tmp_path, field):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    info = json.loads((copy / "model.json").read_text())
    del info[field]
    (copy / "model.json").write_text(json.dumps(info))
    result = CliRunner().invoke(app, ["segment", str(tmp_path / "scan.nii.gz"), "--out",
                                      str(tmp_path / "o"), "--model", str(copy)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"model.json: lacks {field}" in result.output


def test_the_bundled_folder_holds_only_what_its_model_json_lists():
    from brainuad.models.bundled import available

    for bundled in available():
        held = sorted(p.name for p in bundled.folder.iterdir())
        assert held == sorted(["model.json", *bundled.info.files]), bundled.folder
        assert all((bundled.folder / name).stat().st_size > 0 for name in held)


def test_the_bundled_weights_stay_under_25_mb():
    """Everything in src/brainuad/weights ships in the wheel and the repository: the bundled
    models and deepbet's networks (17 MB of ONNX) together under 25 MB."""
    from brainuad.models.bundled import WEIGHTS

    total = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file())
    assert 15e6 < total < 25e6, total


def test_the_bundled_thresholds_hold_only_numbers_of_the_shipped_scoring():
    """threshold.json of a bundled model: the scoring its config runs, its quantiles and its
    operating point; no threshold of another scoring (issue 37)."""
    import json

    from brainuad.detection.detector import Detector
    from brainuad.models.bundled import available

    for bundled in available():
        detector = Detector.load(bundled.folder, "cpu")
        key = detector.scoring_key(detector.settings())
        info = json.loads((bundled.folder / "threshold.json").read_text())
        assert set(info) == {"version", "calibration", "scorings", "operating_points"}
        assert list(info["scorings"]) == [key] and list(info["operating_points"]) == [key]
        assert set(info["scorings"][key]) == {"quantiles", "voxels", "range", "subjects"}
        assert info["scorings"][key]["subjects"] == info["calibration"]["subjects"]
        assert set(info["operating_points"][key]) == {"threshold", "dice", "subjects"}
        assert detector.threshold(detector.settings()) == info["operating_points"][key][
            "threshold"]
