"""Reliability, round two: scans that defeat registration, hostile headers, and every input
checked before the slow work. Each case: exit code 1, one `error:` line naming the file and the
reason, no traceback, no partial output."""

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from brainuad.commands.cli import app
from brainuad.errors import BrainUADError
from brainuad.io.images import load_image
from brainuad.io.manifest import Subject
from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_subject
from brainuad.preprocessing.registration import RegistrationConfig
from conftest import write_nifti

runner = CliRunner()
#: Registration cut to two coarse levels: what is tested is the refusal, not the accuracy.
QUICK = PreprocessConfig(registration=RegistrationConfig(
    shrink=(4, 2), smoothing_mm=(2.0, 1.0), iterations=40, sampling=(0.2, 0.05)))


def _fails_cleanly(args, *names):
    result = runner.invoke(app, args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(errors) == 1, result.output
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def _header_bomb(path, shape):
    """A NIfTI-1 header promising `shape` (int16), followed by 8 bytes of data: a few bytes on
    disk, gigabytes if anything believed it."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    header.set_sform(np.eye(4), code=1)
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4 + b"\1" * 8)
    return path


@pytest.mark.parametrize("shape, reason", [
    ((4000, 4000, 4000), "header promises"),  # 64 billion voxels
    ((2, 2, 2, 2, 2), "expected a 3D image"),
    ((64, 64, 64, 5), "expected a 3D image"),
])
def test_a_header_is_checked_before_its_data_is_read(tmp_path, shape, reason):
    bomb = _header_bomb(tmp_path / "bomb.nii.gz", shape)
    assert bomb.stat().st_size < 1000
    with pytest.raises(BrainUADError, match=reason):
        load_image(bomb)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"subject,split,health,flair\ns,train,healthy,{bomb.name}\n")
    _fails_cleanly(["preprocess", str(manifest), str(tmp_path / "out")], "bomb.nii.gz", reason)
    assert not (tmp_path / "out" / "s").exists()
    _fails_cleanly(["segment", str(bomb), "--out", str(tmp_path / "seg")], "bomb.nii.gz",
                   reason)
    assert not (tmp_path / "seg" / "bomb").exists()


def test_the_voxel_limit_can_be_set(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "a.nii.gz", np.random.default_rng(0).random((10, 10, 10)))
    monkeypatch.setenv("BRAINUAD_MAX_VOXELS", "999")
    with pytest.raises(BrainUADError, match="more than the limit of 999"):
        load_image(path)
    monkeypatch.setenv("BRAINUAD_MAX_VOXELS", "1000")
    assert load_image(path).shape == (10, 10, 10)


def test_memory_error_while_loading_is_a_clear_error(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "a.nii.gz", np.random.default_rng(0).random((10, 10, 10)))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(np, "asanyarray", no_memory)
    with pytest.raises(BrainUADError, match="a.nii.gz: too large to load into memory"):
        load_image(path)


def _raw_like(tmp_path):
    """A synthetic 2 mm brain moved onto a tilted scanner grid (registration needed)."""
    from brainuad.data.example import example_scan

    return example_scan(tmp_path, resolution=2)[0]


@pytest.mark.parametrize("problem", ["shape", "affine", "values"])
def test_a_bad_mask_is_reported_before_registration(tmp_path, monkeypatch, problem):
    import brainuad.preprocessing.pipeline as preprocess

    scan = _raw_like(tmp_path)
    source = nib.load(scan)
    data = np.zeros(source.shape, np.float32)
    data[10:20, 10:20, 5:10] = 1
    affine = source.affine.copy()
    if problem == "shape":
        data = data[:-1]
    elif problem == "affine":
        affine[0, 3] += 5
    else:
        data[12, 12, 6] = 2
    mask = write_nifti(tmp_path / "mask.nii.gz", data, affine)

    def never(*args, **kwargs):
        raise AssertionError("registration ran before the mask was checked")

    monkeypatch.setattr(preprocess, "register_volumes", never)
    subject = Subject("s", "train", "healthy", {"flair": scan}, mask=mask)
    with pytest.raises(BrainUADError, match="mask.nii.gz"):
        preprocess_subject(subject, tmp_path / "out", PreprocessConfig())
    assert not (tmp_path / "out" / "s").exists()


def _broken(tmp_path, how):
    """A synthetic raw-like scan made unregistrable: its top third only, its axes mislabelled,
    or a non-brain phantom."""
    scan = nib.load(_raw_like(tmp_path))
    data, affine = np.asarray(scan.dataobj).astype(np.float32), scan.affine.copy()
    if how == "top third":
        ornt = nib.orientations.io_orientation(affine)
        axial = int(np.flatnonzero(ornt[:, 0] == 2)[0])
        n = data.shape[axial]
        data = np.moveaxis(np.moveaxis(data, axial, 0)[2 * n // 3:], 0, axial)
        affine[:3, 3] += affine[:3, axial] * (2 * n // 3)
    elif how == "axes mislabelled":
        affine[[1, 2]] = affine[[2, 1]]
        affine[1] *= -1
    else:
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, k) for k in (60, 60, 20)],
                                    indexing="ij"))
        data = ((grid[0] ** 2 + grid[1] ** 2 < 0.6) * 900.0 + 50 * grid[2]).clip(0)
        affine = np.diag([3.0, 3.0, 6.0, 1.0])
    return write_nifti(tmp_path / f"{how.replace(' ', '_')}.nii.gz", data.astype(np.float32),
                       affine)


@pytest.mark.parametrize("how, figure", [("top third", "field of view"),
                                         ("axes mislabelled", "similarity"),
                                         ("phantom", "similarity")])
def test_an_implausible_registration_is_refused_with_its_figure(tmp_path, how, figure):
    from brainuad.errors import SubjectsFailed
    from brainuad.io.manifest import read_manifest
    from brainuad.preprocessing.pipeline import preprocess_manifest

    path = _broken(tmp_path, how)
    good = _raw_like(tmp_path / "good")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"subject,split,health,flair\ns,train,healthy,{path.name}\n"
                        f"g,train,healthy,{good}\n")
    with pytest.raises(SubjectsFailed) as failed:  # --keep-going lists it with the others
        preprocess_manifest(manifest, tmp_path / "out", QUICK, keep_going=True)
    reason = failed.value.failures["s"]
    assert path.name in reason and "registration to MNI152 implausible" in reason
    assert figure in reason and list(failed.value.failures) == ["s"]
    assert not (tmp_path / "out" / "s").exists()
    done = read_manifest(tmp_path / "out" / "manifest.csv").subjects
    assert [s.subject for s in done] == ["g"]  # the figures are in the manifest and QC file
    assert float(done[0].extra["registration_brain_dice"]) > 0.8
    assert (tmp_path / "out" / "g" / "registration.json").is_file()


def test_a_failed_overwrite_leaves_nothing_that_looks_complete(tmp_path):
    from brainuad.preprocessing.pipeline import preprocess_manifest

    scan = _raw_like(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"subject,split,health,flair\ns,train,healthy,{scan.name}\n")
    out = tmp_path / "out"
    preprocess_manifest(manifest, out, QUICK)
    assert (out / "s" / "mask.nii.gz").exists()
    broken = _broken(tmp_path, "phantom")
    scan.unlink()
    broken.rename(scan)  # the same path now holds a scan that cannot be registered
    with pytest.raises(BrainUADError, match="implausible"):
        preprocess_manifest(manifest, out, QUICK, overwrite=True)
    assert not (out / "s" / "mask.nii.gz").exists()  # its old files are not taken as done


def test_an_itk_exception_is_one_line_naming_scan_and_stage(tmp_path, monkeypatch):
    import SimpleITK as sitk

    import brainuad.preprocessing.registration as register

    def broken(*args, **kwargs):
        raise RuntimeError("/src/itkImageMomentsCalculator.hxx:284:\nITK ERROR: "
                           "ImageMomentsCalculator(0x1): Compute(): Total Mass of the image "
                           "was zero. Aborting here to prevent division by zero later on.")

    monkeypatch.setattr(sitk, "CenteredTransformInitializer", broken)
    scan = _raw_like(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"subject,split,health,flair\ns,train,healthy,{scan.name}\n")
    line = _fails_cleanly(["preprocess", str(manifest), str(tmp_path / "out")], scan.name,
                          "to MNI152", "registration failed", "Total Mass")
    assert "\n" not in line and register  # one line
    assert not (tmp_path / "out" / "s").exists()


@pytest.mark.parametrize("suffix, content", [(".h5", b"\x89HDF\r\n\x1a\n"),
                                             (".mat", b"MATLAB 5.0 MAT-file"),
                                             (".tfm", b"\x89HDF\r\n\x1a\n")])
def test_transforms_are_read_only_as_itk_text(tmp_path, suffix, content):
    from brainuad.preprocessing.transforms import read_transform

    path = tmp_path / f"t{suffix}"
    path.write_bytes(content + struct.pack("<d", 1.0) * 8)
    with pytest.raises(BrainUADError, match=f"t{suffix}: .*ITK text"):
        read_transform(path)


def test_subject_names_that_differ_only_in_case_are_duplicates(tmp_path):
    path = write_nifti(tmp_path / "a.nii.gz", np.random.default_rng(0).random((8, 8, 8)))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"subject,split,health,flair\nSub1,train,healthy,{path.name}\n"
                        f"sub1,train,healthy,{path.name}\n")
    _fails_cleanly(["preprocess", str(manifest), str(tmp_path / "out")], "m.csv",
                   "duplicate subject 'sub1'", "case")
    assert not (tmp_path / "out").exists()
