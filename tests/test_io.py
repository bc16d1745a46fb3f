import gzip
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from brainuad.errors import BrainUADError
from brainuad.io.files import atomic_path
from brainuad.io.images import load_binary, load_image, save_volume
from conftest import write_nifti


def _err(call, *args):
    with pytest.raises(BrainUADError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def image_path(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    return write_nifti(tmp_path / "img.nii.gz", data)


def test_reads_valid_image(image_path):
    volume = load_image(image_path)
    assert volume.shape == (4, 5, 6)
    assert volume.data.dtype == np.float32
    np.testing.assert_array_equal(volume.affine, np.eye(4))


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p, "file not found"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "file is empty"),
        (lambda p: (p.write_bytes(gzip.compress(b"not a nifti at all" * 30)), p)[1],
         "cannot be read as NIfTI"),
        (lambda p: (p.write_text("hello"), p)[1], "cannot be read as NIfTI"),
    ],
    ids=["missing", "directory", "empty", "garbage-gz", "plain-text"],
)
def test_unreadable_files(tmp_path, make, expected):
    path = make(tmp_path / "scan.nii.gz")
    message = _err(load_image, path)
    assert expected in message and str(path) in message


def test_truncated_gz(tmp_path, image_path):
    raw = image_path.read_bytes()
    broken = tmp_path / "cut.nii.gz"
    broken.write_bytes(raw[: len(raw) // 2])
    assert "cannot be read as NIfTI" in _err(load_image, broken)


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.ones((4, 5), np.float32), "expected a 3D image"),
        (np.ones((4, 5, 6, 2), np.float32), "expected a 3D image"),
        (np.zeros((4, 5, 6), np.float32), "all zero"),
        (np.full((4, 5, 6), 3.0, np.float32), "constant"),
    ],
    ids=["2d", "4d", "zero", "constant"],
)
def test_bad_image_content(tmp_path, data, expected):
    path = write_nifti(tmp_path / "x.nii.gz", data)
    assert expected in _err(load_image, path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite(tmp_path, value):
    data = np.ones((4, 5, 6), np.float32)
    data[1, 2, 3] = value
    path = write_nifti(tmp_path / "x.nii.gz", data)
    assert "NaN or infinite" in _err(load_image, path)


def test_4d_with_one_volume_is_3d(tmp_path):
    data = np.random.default_rng(0).random((4, 5, 6, 1)).astype(np.float32)
    assert load_image(write_nifti(tmp_path / "x.nii.gz", data)).shape == (4, 5, 6)


def test_mask_geometry_and_values(tmp_path, image_path):
    image = load_image(image_path)
    ok = write_nifti(tmp_path / "m.nii.gz", np.ones((4, 5, 6), np.uint8))
    assert load_binary(ok, image).data.dtype == np.uint8
    shape = write_nifti(tmp_path / "s.nii.gz", np.ones((4, 5, 7), np.uint8))
    assert "shape (4, 5, 7) differs" in _err(load_binary, shape, image)
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    moved = write_nifti(tmp_path / "a.nii.gz", np.ones((4, 5, 6), np.uint8), shifted)
    assert "affine differs" in _err(load_binary, moved, image)
    labels = write_nifti(tmp_path / "l.nii.gz", np.full((4, 5, 6), 2, np.uint8))
    message = _err(load_binary, labels, image, "label")
    assert "label must hold only 0 and 1" in message and "2" in message


def test_save_round_trip_with_spaces_and_unicode(tmp_path):
    data = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    path = save_volume(tmp_path / "dossier à part" / "résultat 1.nii.gz", data, affine)
    volume = load_image(path)
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, affine)
    assert [p.name for p in path.parent.iterdir()] == ["résultat 1.nii.gz"]


def test_failed_write_leaves_nothing(tmp_path):
    final = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_killed_write_leaves_no_final_file(tmp_path):
    final = tmp_path / "out.nii.gz"
    code = (
        "import os, signal, sys\n"
        "from brainuad.io.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(final)], check=False)
    assert result.returncode == -signal.SIGKILL
    assert not final.exists()
    assert all(p.name.startswith(".") for p in tmp_path.iterdir())
    assert os.listdir(tmp_path)  # the partial file is there, under a hidden temporary name


def test_outputs_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from brainuad.io.files import write_text

    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # not mkstemp's owner-only 0600
