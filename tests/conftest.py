"""Shared fixtures: tiny hand-built volumes and cohorts, written as real NIfTI files."""

from __future__ import annotations

import locale
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def ellipsoid_brain(shape=(24, 28, 20), seed=0):
    """A toy brain: ellipsoid mask, smooth 'tissue' texture, values in arbitrary units."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    mask = ((grid ** 2).sum(0) < 0.8).astype(np.uint8)
    image = (300 + 100 * np.sin(4 * grid[0]) * np.cos(3 * grid[1]) + rng.normal(0, 5, shape))
    return (image * mask).astype(np.float32), mask


def make_cohort(root: Path, n_healthy: int = 4, n_patients: int = 2, shape=(24, 28, 20),
                affine: np.ndarray | None = None, lesion_value: float = 550.0) -> Path:
    """Write a toy cohort (flair, mask, label per subject) and its manifest; return the manifest."""
    rows = ["subject,split,health,flair,mask,label"]
    for i in range(n_healthy + n_patients):
        patient = i >= n_healthy
        image, mask = ellipsoid_brain(shape, seed=i)
        label = np.zeros(shape, np.uint8)
        if patient:
            c = np.array(shape) // 2 + np.array([2, -3, 1])
            label[c[0] - 2:c[0] + 2, c[1] - 2:c[1] + 2, c[2] - 2:c[2] + 2] = 1
            image[label > 0] = lesion_value
        name = f"sub-{'p' if patient else 'h'}{i:02d}"
        for key, data in (("flair", image), ("mask", mask), ("label", label)):
            write_nifti(root / name / f"{key}.nii.gz", data, affine)
        split = "test" if patient else ("val" if i == n_healthy - 1 else "train")
        health = "patient" if patient else "healthy"
        rows.append(f"{name},{split},{health},{name}/flair.nii.gz,{name}/mask.nii.gz,"
                    f"{name}/label.nii.gz")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    return make_cohort(tmp_path / "cohort")


@pytest.fixture
def prepared(tmp_path: Path, cohort: Path) -> Path:
    """The toy cohort preprocessed (already on its own grid: no registration)."""
    from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_manifest

    return preprocess_manifest(cohort, tmp_path / "prep",
                               PreprocessConfig(register="never")).path


class PicklePayload:
    """Unpickling this calls open(path, "w"): the file appearing means code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


#: A network small enough for a training step in milliseconds.
TINY_MODEL = {"image_size": 32, "width": 4, "max_width": 8}


def tiny_config(name: str = "anovaegan", epochs: int = 1, **train):
    """A preset with a tiny network, its detection defaults (the normative kind scores its
    z-score), `epochs` and `train` settings."""
    from brainuad.config import DetectConfig, ModelConfig, RunConfig, TrainConfig
    from brainuad.models.registry import model_defaults, name_defaults

    return RunConfig(model=ModelConfig(**model_defaults(name), **TINY_MODEL),
                     train=TrainConfig(**{"epochs": epochs, "batch_size": 4, **train}),
                     detect=DetectConfig(**name_defaults(name).get("detect", {})))


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (needs ../shared/data beside "
                    "the repository)")
    return path


def bids_validator() -> str:
    """The BIDS validator's command (bids-validator-deno, a test extra): next to this Python
    (an environment that is not activated) or on PATH; a failure, not a skip, if absent."""
    import os
    import shutil
    import sys
    from pathlib import Path

    found = shutil.which("bids-validator-deno", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail("bids-validator-deno is not installed (pip install -e '.[test]')")
    return found


def fetched_urls(page: str) -> list[str]:
    """What an HTML page would fetch from the network (src, href, CSS url()); its inline
    base64 images do not count, whatever letters they happen to contain."""
    return re.findall(r"""(?:src|href)\s*=\s*["']?((?:https?:)?//[^"'\s>]*)"""
                      r"""|url\(\s*["']?((?:https?:)?//[^"')]*)""", page)


def foreground(volume) -> np.ndarray:
    """A toy scan's brain: its filled foreground (the toy scans have no skull)."""
    from scipy import ndimage

    data = np.asarray(volume.data)
    level = 0.1 * np.percentile(data[data > 0], 99) if (data > 0).any() else 0.0
    return ndimage.binary_fill_holes(data > level)


@pytest.fixture(autouse=True)
def quick_brain_extraction(request, monkeypatch):
    """Fast tests outline their toy brains by the foreground instead of running deepbet's
    networks (about 1 s a scan, and the toy scans are not heads); tests marked slow or realdata
    run deepbet itself."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("realdata"):
        return
    from brainuad.preprocessing import pipeline

    monkeypatch.setattr(pipeline, "scan_brain", foreground)


@pytest.fixture(autouse=True)
def process_memory_as_it_is(monkeypatch):
    """The scan commands' glibc and numpy settings (`runtime/memory.py`) last for the rest of
    their process: in-process command tests leave pytest's as it is (tests/test_memory.py
    runs them in subprocesses)."""
    from brainuad.commands import use

    monkeypatch.setattr(use, "reuse_memory", lambda: False)


# --- segment's and compare's heavy work stubbed (tests of the bookkeeping around it) ---------

STUB_QUALITY = {"brain_dice": 0.95, "coverage": 1.0, "scale": 1.0, "rotation": 0.0,
                "metric": -0.6}


def fake_find_lesions(path, job, lap):
    """segment's heavy part (registration, scoring) on a tiny scan: its score is its
    intensity / 100, thresholded at the job's threshold."""
    from brainuad.commands.segment import Found
    from brainuad.io.images import load_scan
    from brainuad.preprocessing.atlas import template_shape
    from brainuad.preprocessing.pipeline import Registered

    raw = load_scan(path)
    for stage in ("read", "preprocess", "score", "lesions"):
        lap(stage)
    brain = raw.data > 0
    score = (raw.data / 100).astype(np.float32)
    registered = np.zeros(template_shape(), np.float32)
    native = {"score": score, "lesions": (score > job.threshold) & brain, "brain": brain}
    lap("to scan grid")
    return Found(raw, native, Registered({job.detector.cfg.train.modality: registered},
                                         brain.astype(np.uint8), None, STUB_QUALITY))


def fake_find_changes(baseline_path, followup_path, preprocess, cfg, lap=lambda s: None):
    """compare's heavy part on two tiny scans of one grid: their difference / 10, a change
    beyond 2 (new where it grew, shrinking where it faded)."""
    from scipy import ndimage

    from brainuad.io.images import load_scan
    from brainuad.longitudinal.change import NEW, SHRINKING, Change
    from brainuad.longitudinal.compare import Found
    from brainuad.longitudinal.visits import RegisteredPair, Visits
    from brainuad.preprocessing.brain_mask import BrainMask

    baseline, followup = load_scan(baseline_path), load_scan(followup_path)
    for stage in ("read", "register", "intensities"):
        lap(stage)
    brain = followup.data > 0
    score = ((followup.data - baseline.data) / 10).astype(np.float32)
    mask = np.where(score > 2, 1, np.where(score < -2, 2, 0)).astype(np.uint8)
    labels, count = ndimage.label(mask > 0)
    components = [{"label": i, "voxels": int((labels == i).sum()),
                   "type": NEW if mask[labels == i].max() == 1 else SHRINKING}
                  for i in range(1, count + 1)]
    change = Change(score, mask, components, labels, 10.0)
    visits = Visits(baseline.data, followup.data, score, score, brain, brain * 1.0, 0.9,
                    spacing=followup.spacing)
    registered = RegisteredPair(followup.data, baseline.data, brain, {}, None, STUB_QUALITY,
                                BrainMask("template"))
    lap("change")
    return Found(followup, registered, visits, change, [])


class Notes(list):
    """The lines the commands say (`progress.note`) since the last `said()`."""

    def said(self) -> str:
        text = "\n".join(self)
        self.clear()
        return text


def stub_heavy_work(monkeypatch) -> Notes:
    """segment's and compare's heavy parts stubbed (`fake_find_lesions`, `fake_find_changes`),
    a clock that always reads 0 (so that the seconds in two runs' summaries agree), the report's
    registration panel left out (0.1 s a scan), and what the commands say collected."""
    from types import SimpleNamespace

    from brainuad.commands import bids_app
    from brainuad.commands import compare as compare_command
    from brainuad.commands import segment as segment_command
    from brainuad.reporting import html
    from brainuad.runtime import clock

    monkeypatch.setattr(segment_command, "find_lesions", fake_find_lesions)
    monkeypatch.setattr(compare_command, "find_changes", fake_find_changes)
    still = SimpleNamespace(perf_counter=lambda: 0.0)
    for module in (clock, segment_command, compare_command):
        monkeypatch.setattr(module, "time", still)
    monkeypatch.setattr(html, "_registration_figure", lambda registered, full_fov=False: "")
    notes = Notes()
    for module in (segment_command, compare_command, bids_app):
        monkeypatch.setattr(module, "note", notes.append)
    return notes


@pytest.fixture
def stubbed(monkeypatch) -> Notes:
    """`stub_heavy_work` for one test."""
    return stub_heavy_work(monkeypatch)


def tiny_scan(path: Path, seed: int = 0, lesion: float = 0.0) -> Path:
    """A toy FLAIR on a 4 mm grid for the stubbed commands; `lesion` > 0: a bright 3^3 block."""
    image, mask = ellipsoid_brain(seed=0)
    image = image * 0.5 + np.random.default_rng(seed).normal(0, 1, image.shape) * mask
    if lesion:
        image[10:13, 12:15, 8:11] = lesion
    return write_nifti(path, image.astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0]))


def write_series(image: sitk.Image, folder, frame_of_reference: bool = True, number: int = 1,
                 description: str = "AX FLAIR", tags: dict | None = None) -> str:
    """`image` as a scanner writes an MR series: one file per slice, with its position,
    orientation, study, series (`number`, `description`, more `tags`) and frame of reference
    (files named out of slice order; several series can share `folder`). Its UID."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = f"1.2.826.0.1.3680043.2.1125.41.1.{number}"
    image = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    tags = {"0020|000e": uid, "0020|000d": "1.2.826.0.1.3680043.2.1125.41.2",
            "0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0010|0020": "P41",
            "0020|0010": "1", "0020|0011": str(number), "0008|103e": description,
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0052": "1.2.826.0.1.3680043.2.1125.41.3", **(tags or {})}
    depth = image.GetDepth()
    names = np.random.default_rng(0).permutation(depth)
    # GDCM's writer leaves the process in the "C" locale (ASCII text I/O for every later
    # test): put it back
    saved = locale.setlocale(locale.LC_ALL)
    for z in range(depth):
        piece = image[:, :, z]
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        origin = image.TransformIndexToPhysicalPoint((0, 0, z))
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in origin))
        piece.SetMetaData("0020|0013", str(z + 1))
        writer.SetFileName(str(folder / f"{number}-{names[z]:03d}.dcm"))
        writer.Execute(piece)
    locale.setlocale(locale.LC_ALL, saved)
    if not frame_of_reference:  # GDCM writes one whatever it is given: taken out after
        import pydicom

        for path in folder.glob(f"{number}-*.dcm"):
            dataset = pydicom.dcmread(path)
            del dataset.FrameOfReferenceUID
            dataset.save_as(path)
    return uid


def write_enhanced(series, folder, number: int = 7) -> str:
    """The single-frame DICOM series in `series` (a folder of one series, or its files) as one
    legacy-converted enhanced MR image (one multi-frame file, highdicom) in `folder`. Its
    SeriesInstanceUID."""
    import warnings

    import highdicom as hd
    import pydicom

    files = sorted(series.glob("*.dcm")) if hasattr(series, "glob") else series
    sources = [pydicom.dcmread(path) for path in files]
    uid = f"1.2.826.0.1.3680043.2.1125.41.9.{number}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # attributes the synthetic series does not have
        image = hd.legacy.LegacyConvertedEnhancedMRImage(
            sources, series_instance_uid=uid, series_number=number, sop_instance_uid=hd.UID(),
            instance_number=1)
    folder.mkdir(parents=True, exist_ok=True)
    image.save_as(folder / f"enhanced-{number}.dcm")
    return uid
